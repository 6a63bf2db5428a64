//go:build !linux

package main

import "syscall"

// controlNoPort does nothing outside Linux.
func controlNoPort(_, _ string, _ syscall.RawConn) error { return nil }
