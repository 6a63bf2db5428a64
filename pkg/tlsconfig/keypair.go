package tlsconfig

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
)

// KeyPair is a certificate and its private key, loaded from two PEM files
// and loaded again when either file is replaced (a new inode, as with a
// rename or Kubernetes' symlink swap) or its modification time or size
// changes.
// The files are looked at (two stat calls) on every handshake, which costs
// little next to the handshake itself and makes a renewal take effect at
// once. A replacement that does not load (a half-written file, a key that
// does not match yet because the certificate was written first) is logged
// once per change, and the previous pair is served until the files load
// again. It is safe for concurrent use.
type KeyPair struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	current stamps  // of the files cert was loaded from
	tried   *stamps // of the last files that failed to load, to report each change once
}

// stamps tell whether the cert and key files changed since they were read.
type stamps [2]os.FileInfo

// same reports whether s and o describe the same files, unchanged.
func (s stamps) same(o stamps) bool {
	for i := range s {
		a, b := s[i], o[i]
		if a == nil || b == nil {
			if a != b {
				return false
			}
			continue
		}
		if !os.SameFile(a, b) || !a.ModTime().Equal(b.ModTime()) || a.Size() != b.Size() {
			return false
		}
	}
	return true
}

// NewKeyPair loads the certificate of certFile and the key of keyFile.
// It returns an error naming the file when either cannot be read or parsed,
// or when the key does not match the certificate.
func NewKeyPair(certFile, keyFile string, log *slog.Logger) (*KeyPair, error) {
	if log == nil {
		log = slog.Default()
	}
	kp := &KeyPair{certFile: certFile, keyFile: keyFile, log: log}
	st, err := kp.stat()
	if err != nil {
		return nil, err
	}
	if kp.cert, err = kp.load(); err != nil {
		return nil, err
	}
	kp.current = st
	return kp, nil
}

// GetCertificate returns the current certificate; it is a
// tls.Config.GetCertificate.
func (kp *KeyPair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return kp.Certificate(), nil
}

// GetClientCertificate returns the current certificate; it is a
// tls.Config.GetClientCertificate.
func (kp *KeyPair) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return kp.Certificate(), nil
}

// Certificate returns the pair as the files hold it now, or the last one
// that loaded when they do not load.
func (kp *KeyPair) Certificate() *tls.Certificate {
	kp.mu.Lock()
	defer kp.mu.Unlock()
	st, err := kp.stat()
	if st.same(kp.current) || (kp.tried != nil && st.same(*kp.tried)) {
		return kp.cert
	}
	var cert *tls.Certificate
	if err == nil {
		cert, err = kp.load()
	}
	if err != nil {
		kp.tried = &st
		kp.log.Error("TLS certificate files changed but do not load; still using the previous certificate",
			"cert_file", kp.certFile, "key_file", kp.keyFile, "err", err)
		return kp.cert
	}
	kp.cert, kp.current, kp.tried = cert, st, nil
	kp.log.Info("TLS certificate reloaded", "cert_file", kp.certFile,
		"subject", cert.Leaf.Subject.String(), "serial", cert.Leaf.SerialNumber.String(), "not_after", cert.Leaf.NotAfter)
	return cert
}

// stat reads the files' stamps; they are taken before the files are read,
// so that a change made while reading is seen at the next handshake.
func (kp *KeyPair) stat() (stamps, error) {
	var st stamps
	for i, name := range []string{kp.certFile, kp.keyFile} {
		fi, err := os.Stat(name)
		if err != nil {
			return st, err
		}
		st[i] = fi
	}
	return st, nil
}

func (kp *KeyPair) load() (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(kp.certFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(kp.keyFile)
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate %s with key %s: %w", kp.certFile, kp.keyFile, err)
	}
	return &cert, nil
}
