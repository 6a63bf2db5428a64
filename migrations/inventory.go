package migrations

import "embed"

//go:embed inventory/*.sql
var inventory embed.FS

// Inventory holds the inventory service's tables: products with their stock
// and reserved units, and the reservations held for orders.
var Inventory = sub(inventory, "inventory")
