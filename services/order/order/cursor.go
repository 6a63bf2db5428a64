package order

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Cursor is a position in an order list (a customer's or the admin
// search's): the last order of a page, by (created_at, id). Clients see it
// only as an opaque string. It holds no filter: every page applies the
// filters of its own request, so a cursor can move a page along but never
// widen what a page may show (see ListQuery).
type Cursor struct {
	CreatedAt time.Time
	ID        uuid.UUID
}

// cursorVersion prefixes encoded cursors, so that the format can change
// without misreading cursors handed out before.
const cursorVersion = "v1"

// String encodes c as unpadded base64url of "v1.<unix microseconds>.<id>".
func (c Cursor) String() string {
	raw := cursorVersion + "." + strconv.FormatInt(c.CreatedAt.UnixMicro(), 10) + "." + c.ID.String()
	return base64.RawURLEncoding.EncodeToString([]byte(raw))
}

// ParseCursor decodes a cursor made by String. It returns an error matching
// ErrInvalidCursor for anything else.
func ParseCursor(s string) (Cursor, error) {
	bad := fmt.Errorf("%w: %q", ErrInvalidCursor, s)
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(s) > 128 {
		return Cursor{}, bad
	}
	parts := strings.Split(string(b), ".")
	if len(parts) != 3 || parts[0] != cursorVersion {
		return Cursor{}, bad
	}
	us, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || us < 0 {
		return Cursor{}, bad
	}
	id, err := uuid.Parse(parts[2])
	if err != nil || id.String() != parts[2] {
		return Cursor{}, bad
	}
	return Cursor{CreatedAt: time.UnixMicro(us).UTC(), ID: id}, nil
}
