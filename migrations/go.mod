module github.com/orderly/orderly/migrations

go 1.26
