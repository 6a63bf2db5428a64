// Package tlsconfig builds the TLS configurations of Orderly's services from
// PEM files: the HTTP server's (TLS_CERT_FILE, TLS_KEY_FILE), and the broker
// client's (AMQP_CA_FILE, with AMQP_CERT_FILE and AMQP_KEY_FILE for a client
// certificate).
//
// A certificate and its key are a KeyPair, read again whenever either file
// changes, so a renewed certificate is served from the next handshake on
// without a restart, and connections already open (WebSocket streams) are
// not touched. A pair that fails to load after a change is logged and the
// previous one is kept.
//
// Every constructor reads its files at once and returns an error naming the
// file and what is wrong with it, so that a broken setting stops a service
// at start rather than at its first handshake.
package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
)

// cipherSuites are the TLS 1.2 suites offered: ECDHE key exchange, for
// forward secrecy, with an AEAD cipher. TLS 1.3's suites are all AEAD and
// Go does not let them be configured, so Go's defaults apply there.
var cipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// Server returns the configuration of an HTTPS server presenting the
// certificate of certFile (PEM: the leaf, then any intermediates) with the
// private key of keyFile, both re-read when they change (see KeyPair). It
// accepts TLS 1.2 with ECDHE+AEAD suites and TLS 1.3, and offers only
// HTTP/1.1: WebSocket upgrades need it, and HTTP/2 to the browser is the
// ingress's business.
//
// It returns an error naming the file when either cannot be read or parsed,
// or when the key does not match the certificate.
func Server(certFile, keyFile string, log *slog.Logger) (*tls.Config, error) {
	kp, err := NewKeyPair(certFile, keyFile, log)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		CipherSuites:   cipherSuites,
		GetCertificate: kp.GetCertificate,
		NextProtos:     []string{"http/1.1"},
	}, nil
}

// Client returns the configuration of a TLS client with the same versions
// and suites as Server, trusting roots, or the system's roots when roots is
// nil, and presenting kp's certificate when the server asks for one and kp
// is not nil (re-read when its files change, so a renewed client
// certificate is used from the next connection on).
func Client(roots *x509.CertPool, kp *KeyPair) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, CipherSuites: cipherSuites, RootCAs: roots}
	if kp != nil {
		cfg.GetClientCertificate = kp.GetClientCertificate
	}
	return cfg
}

// LoadCA returns a pool of the CA certificates in the PEM file caFile. It
// returns an error naming the file when it cannot be read or holds no
// certificate.
func LoadCA(caFile string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	return pool, nil
}
