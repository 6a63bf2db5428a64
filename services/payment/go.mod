module github.com/orderly/orderly/services/payment

go 1.26
