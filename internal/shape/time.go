package shape

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"
)

// Time is a model timestamp. AWS JSON protocols send it as epoch seconds
// with a fractional part ("createdAt": 1563809909.282).
type Time struct{ time.Time }

// NewTime returns t truncated to the millisecond precision AWS sends.
func NewTime(t time.Time) *Time { return &Time{t.Truncate(time.Millisecond)} }

// MarshalJSON writes epoch seconds with millisecond precision.
func (t Time) MarshalJSON() ([]byte, error) {
	ms := t.UnixMilli()
	return []byte(strconv.FormatFloat(float64(ms)/1000, 'f', -1, 64)), nil
}

// UnmarshalJSON reads epoch seconds or an RFC 3339 string.
func (t *Time) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		p, err := ParseTime(s)
		if err != nil {
			return err
		}
		t.Time = p
		return nil
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return fmt.Errorf("invalid timestamp %s", b)
	}
	sec, frac := math.Modf(f)
	t.Time = time.Unix(int64(sec), int64(math.Round(frac*1000))*int64(time.Millisecond)).UTC()
	return nil
}

// ParseTime parses the string forms AWS accepts for a timestamp.
func ParseTime(s string) (time.Time, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
		return time.UnixMilli(int64(f * 1000)).UTC(), nil
	}
	return time.Parse(time.RFC3339Nano, s)
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
