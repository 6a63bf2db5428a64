package main

import (
	"testing"

	"github.com/orderly/orderly/pkg/leaktest"
)

func TestMain(m *testing.M) { leaktest.Main(m) }
