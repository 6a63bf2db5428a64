package migrations

import "embed"

//go:embed payment/*.sql
var payment embed.FS

// Payment holds the payment service's own tables (payments, refunds); its
// database also carries Messaging.
var Payment = sub(payment, "payment")
