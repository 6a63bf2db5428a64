package migrations

import "embed"

//go:embed order/*.sql
var order embed.FS

// Order holds the order service's tables: orders, their items and status
// history, the catalog replica and idempotency keys.
var Order = sub(order, "order")
