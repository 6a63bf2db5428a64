module github.com/orderly/orderly/tests

go 1.26
