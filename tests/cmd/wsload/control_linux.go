package main

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// controlNoPort sets IP_BIND_ADDRESS_NO_PORT on a socket about to be bound
// to a chosen source address: the kernel then picks the source port at
// connect time, per destination, instead of reserving one at bind time for
// every destination, so one source address can open far more connections.
func controlNoPort(_, _ string, rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1) //nolint:gosec // a file descriptor fits in int
	}); err != nil {
		return err
	}
	return serr
}
