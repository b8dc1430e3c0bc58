module kes-bench/go-reference

go 1.19
