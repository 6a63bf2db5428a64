module github.com/orderly/orderly/services/inventory

go 1.26
