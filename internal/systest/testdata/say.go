//go:build ignore

// say prints its arguments: the Go-file target of the systest tests.
package main

import (
	"fmt"
	"os"
	"strings"
)

func main() { fmt.Println(strings.Join(os.Args[1:], " ")) }
