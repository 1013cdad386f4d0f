.PHONY: demo test bench lint
demo:  ## run the whole platform on local embedded services (Ctrl-C stops it)
	scripts/demo $(ARGS)
test:  ## install what is missing, start the local stack, run the tests, stop the stack
	scripts/test $(ARGS)
bench: ## run the benchmarks (figures and ratios against a same-run baseline)
	scripts/bench
