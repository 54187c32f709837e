package cloudmap

import "fmt"

// Error codes: the exception shapes of the model that the registry returns.
const (
	CodeInvalidInput           = "InvalidInput"
	CodeNamespaceNotFound      = "NamespaceNotFound"
	CodeNamespaceAlreadyExists = "NamespaceAlreadyExists"
	CodeServiceNotFound        = "ServiceNotFound"
	CodeServiceAlreadyExists   = "ServiceAlreadyExists"
	CodeInstanceNotFound       = "InstanceNotFound"
	CodeOperationNotFound      = "OperationNotFound"
	CodeResourceInUse          = "ResourceInUse"
	CodeDuplicateRequest       = "DuplicateRequest"
	CodeCustomHealthNotFound   = "CustomHealthNotFound"
	CodeResourceNotFound       = "ResourceNotFoundException"
	CodeTooManyTags            = "TooManyTagsException"
	CodeServiceAttributesLimit = "ServiceAttributesLimitExceededException"
	CodeResourceLimitExceeded  = "ResourceLimitExceeded"
	CodeRequestLimitExceeded   = "RequestLimitExceeded"
	CodeUnknownOperation       = "UnknownOperationException"
	CodeSerializationException = "SerializationException"
	CodeInternalFailure        = "InternalFailure"
)

// Error is a Cloud Map API error: the exception's code (the model's shape
// name), its message, and the exception's other members, if any
// (NamespaceId of NamespaceAlreadyExists, DuplicateOperationId of
// DuplicateRequest, ...). The HTTP status comes from the model.
type Error struct {
	Code    string
	Message string
	Fields  map[string]string
}

// Error formats the error as the AWS CLI prints it: code, then message.
func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Status is the HTTP status of the error: the model's, else 400.
func (e *Error) Status() int {
	if s := Model().Shapes[e.Code]; s != nil && s.Exception && s.StatusCode != 0 {
		return s.StatusCode
	}
	return 400
}

func errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

func invalid(format string, args ...any) *Error { return errorf(CodeInvalidInput, format, args...) }
