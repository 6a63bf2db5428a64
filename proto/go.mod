module github.com/orderly/orderly/proto

go 1.26
