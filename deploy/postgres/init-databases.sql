-- One database per service (database-per-service). The postgres image runs
-- this once, when it initializes an empty data directory; each service
-- migrates its own database at start.
CREATE DATABASE orderly_order;
CREATE DATABASE orderly_inventory;
CREATE DATABASE orderly_payment;
CREATE DATABASE orderly_notification;
