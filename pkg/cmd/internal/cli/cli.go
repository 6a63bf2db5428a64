// Package cli is the exit-status convention of Orderly's command-line tools
// (orderly-dlq, orderly-token, orderly-seed, orderly-probe), so that scripts
// read them alike: 0 done, 1 failed, 2 bad command line, and a failure is
// one line on stderr.
package cli

import (
	"errors"
	"fmt"
	"os"
)

// UsageError is a mistake on the command line; Exit exits 2 for it.
type UsageError struct{ msg string }

func (e UsageError) Error() string { return e.msg }

// Usagef returns a UsageError with a message formatted as by fmt.Sprintf.
func Usagef(format string, args ...any) error {
	return UsageError{fmt.Sprintf(format, args...)}
}

// Exit ends the program named name with the status err stands for: it
// returns for nil, else it prints "name: err" on stderr and exits 2 for a
// UsageError and 1 for anything else.
func Exit(name string, err error) {
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, name+": "+err.Error())
	if errors.As(err, new(UsageError)) {
		os.Exit(2)
	}
	os.Exit(1)
}
