package appmesh

import (
	"errors"
	"fmt"
)

// ErrorCode is the name of an App Mesh exception shape. The API writes it
// as the x-amzn-ErrorType header; the model gives its HTTP status.
type ErrorCode string

// The exceptions the operations return.
const (
	CodeBadRequest     ErrorCode = "BadRequestException"
	CodeNotFound       ErrorCode = "NotFoundException"
	CodeConflict       ErrorCode = "ConflictException"
	CodeResourceInUse  ErrorCode = "ResourceInUseException"
	CodeLimitExceeded  ErrorCode = "LimitExceededException"
	CodeTooManyTags    ErrorCode = "TooManyTagsException"
	CodeForbidden      ErrorCode = "ForbiddenException"
	CodeInternalServer ErrorCode = "InternalServerErrorException"
)

// Error is an App Mesh exception: a client-visible code and message.
// Anything else an operation returns is an internal error.
type Error struct {
	Code    ErrorCode
	Message string
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Status returns the HTTP status the model gives the code, or 500 for a
// code it does not know.
func (c ErrorCode) Status() int {
	if s := Model().Shapes[string(c)]; s != nil && s.Exception && s.StatusCode != 0 {
		return s.StatusCode
	}
	return 500
}

func newError(code ErrorCode, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// BadRequest returns a BadRequestException.
func BadRequest(format string, args ...any) *Error {
	return newError(CodeBadRequest, format, args...)
}

// NotFound returns a NotFoundException.
func NotFound(format string, args ...any) *Error { return newError(CodeNotFound, format, args...) }

// Conflict returns a ConflictException.
func Conflict(format string, args ...any) *Error { return newError(CodeConflict, format, args...) }

// InUse returns a ResourceInUseException.
func InUse(format string, args ...any) *Error { return newError(CodeResourceInUse, format, args...) }

// LimitExceeded returns a LimitExceededException.
func LimitExceeded(format string, args ...any) *Error {
	return newError(CodeLimitExceeded, format, args...)
}

// TooManyTags returns a TooManyTagsException.
func TooManyTags(format string, args ...any) *Error {
	return newError(CodeTooManyTags, format, args...)
}

// AsError returns the App Mesh exception in err's chain, if any.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}
