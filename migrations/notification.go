package migrations

import "embed"

//go:embed notification/*.sql
var notification embed.FS

// Notification holds the notification service's tables: the latest status
// of each order and the feed of every status, shared by all its replicas.
// Its database also carries Messaging (for the inbox).
var Notification = sub(notification, "notification")
