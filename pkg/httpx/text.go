package httpx

import (
	"fmt"
	"net/http"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// CheckText is the one rule on the text of identifiers and names that
// clients send (SKUs, customer ids, payment methods, product names,
// cursors, idempotency keys): valid UTF-8, without control characters
// (U+0000–U+001F, U+007F). PostgreSQL refuses a NUL and invalid UTF-8 with
// an error, which would become a 500, and stores the other control
// characters, which then end up in logs, events and other services' pages.
//
// It returns nil for acceptable text, else an error whose message says
// what is wrong in words meant for the client ("contains a control
// character (U+0007)"), to be prefixed with the field's name.
//
// DecodeJSON applies it to every string of a body and ValidInput to every
// path and query parameter, so handlers see no other text.
func CheckText(s string) error {
	if at := invalidUTF8(s); at >= 0 {
		return fmt.Errorf("is not valid UTF-8 (byte %d)", at)
	}
	if i := strings.IndexFunc(s, isControl); i >= 0 {
		return fmt.Errorf("contains a control character (U+%04X)", s[i])
	}
	return nil
}

// isControl reports whether r is a C0 control character or DEL.
func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// invalidUTF8 returns the offset of the first byte of s that is not valid
// UTF-8, or -1.
func invalidUTF8(s string) int {
	if utf8.ValidString(s) {
		return -1
	}
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return i
			}
		}
	}
	return -1
}

// checkStrings applies CheckText to every string reachable from v (struct
// fields, slice and array elements, map keys and values, through pointers
// and interfaces), and returns the JSON path of the first bad one
// ("items[2].sku") with CheckText's error, or "" and nil.
func checkStrings(v reflect.Value, path string) (string, error) {
	switch v.Kind() {
	case reflect.String:
		return path, CheckText(v.String())
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return "", nil
		}
		return checkStrings(v.Elem(), path)
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			switch {
			case name == "-" && f.Tag.Get("json") == "-":
				continue // never decoded
			case name == "" && f.Anonymous:
				// encoding/json lifts an embedded struct's fields.
				if p, err := checkStrings(v.Field(i), path); err != nil {
					return p, err
				}
				continue
			case name == "":
				name = f.Name
			}
			if p, err := checkStrings(v.Field(i), join(path, name)); err != nil {
				return p, err
			}
		}
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return "", nil // bytes (json.RawMessage, base64), not text
		}
		for i := range v.Len() {
			if p, err := checkStrings(v.Index(i), path+"["+strconv.Itoa(i)+"]"); err != nil {
				return p, err
			}
		}
	case reflect.Map:
		keys := v.MapKeys()
		// In key order, so that the same body always names the same field.
		sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
		for _, k := range keys {
			name := join(path, fmt.Sprint(k))
			if k.Kind() == reflect.String {
				if err := CheckText(k.String()); err != nil {
					return join(path, strconv.Quote(k.String())), err
				}
			}
			if p, err := checkStrings(v.MapIndex(k), name); err != nil {
				return p, err
			}
		}
	}
	return "", nil
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// ValidInput returns middleware that refuses, with a 400 invalid-parameter
// problem naming the parameter, a request whose path or query parameters
// (names or values) break CheckText, before any handler sees them. Go's
// server already refuses control characters in header values and in the
// raw request line; their percent-encoded forms (%00, %07, %FF) come out
// here, decoded.
func ValidInput(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := CheckText(r.URL.Path); err != nil {
			writeParameterProblem(w, r, InvalidParameter("path", err.Error()))
			return
		}
		q := r.URL.Query()
		names := make([]string, 0, len(q))
		for name := range q {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			if err := CheckText(name); err != nil {
				writeParameterProblem(w, r, InvalidParameter("query parameter name "+strconv.Quote(name), err.Error()))
				return
			}
			for _, v := range q[name] {
				if err := CheckText(v); err != nil {
					writeParameterProblem(w, r, InvalidParameter("query parameter "+strconv.Quote(name), err.Error()))
					return
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

func writeParameterProblem(w http.ResponseWriter, r *http.Request, err error) {
	WriteError(w, r, nil, err, ParameterErrors)
}
