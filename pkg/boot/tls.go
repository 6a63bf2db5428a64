package boot

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/orderly/orderly/pkg/tlsconfig"
)

// serverTLS returns the HTTP server's TLS configuration, or nil when
// TLS_CERT_FILE and TLS_KEY_FILE are unset and the server speaks plain
// HTTP (behind a TLS-terminating ingress, or in development). It returns an
// error naming the variables when the files do not load.
func (c Config) serverTLS(log *slog.Logger) (*tls.Config, error) {
	if c.TLSCertFile == "" {
		return nil, nil
	}
	cfg, err := tlsconfig.Server(c.TLSCertFile, c.TLSKeyFile, log)
	if err != nil {
		return nil, fmt.Errorf("TLS_CERT_FILE/TLS_KEY_FILE: %w", err)
	}
	return cfg, nil
}

// amqpTLS reports whether AMQP_URL is an amqps:// URL.
func (c Config) amqpTLS() bool {
	uri, err := amqp.ParseURI(c.AMQPURL)
	return err == nil && uri.Scheme == "amqps"
}

// brokerTLS returns the TLS configuration of the broker connection for an
// amqps:// AMQP_URL, or nil for amqp://. It returns an error naming the
// variable whose file does not load.
//
// The CA and client certificate come from AMQP_CA_FILE, AMQP_CERT_FILE and
// AMQP_KEY_FILE rather than amqp091-go's cacertfile/certfile/keyfile URL
// parameters, which it reads only at dial time and without reporting a
// file that holds no certificate.
func (c Config) brokerTLS(log *slog.Logger) (*tls.Config, error) {
	if !c.amqpTLS() {
		return nil, nil
	}
	var roots *x509.CertPool
	if c.AMQPCAFile != "" {
		var err error
		if roots, err = tlsconfig.LoadCA(c.AMQPCAFile); err != nil {
			return nil, fmt.Errorf("AMQP_CA_FILE: %w", err)
		}
	}
	var kp *tlsconfig.KeyPair
	if c.AMQPCertFile != "" {
		var err error
		if kp, err = tlsconfig.NewKeyPair(c.AMQPCertFile, c.AMQPKeyFile, log); err != nil {
			return nil, fmt.Errorf("AMQP_CERT_FILE/AMQP_KEY_FILE: %w", err)
		}
	}
	return tlsconfig.Client(roots, kp), nil
}
