module github.com/orderly/orderly/services/order

go 1.26
