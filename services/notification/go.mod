module github.com/orderly/orderly/services/notification

go 1.26
