// Package cloudmap is the Cloud Map model: the wire types generated from the
// AWS CLI's botocore model (model_gen.go), namespaces, services and
// instances, and their store layout.
package cloudmap

//go:generate go run ../shape/shapegen -service servicediscovery/2017-03-14 -pkg cloudmap -o model_gen.go
