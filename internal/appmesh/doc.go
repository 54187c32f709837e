// Package appmesh is the App Mesh model: the wire types generated from the
// AWS CLI's botocore model (model_gen.go), their validation and defaults,
// ARNs, and the store layout of resources. It does no I/O.
package appmesh

//go:generate go run ../shape/shapegen -service appmesh/2019-01-25 -pkg appmesh -checks checks -o model_gen.go
