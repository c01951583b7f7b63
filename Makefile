# The few commands a contributor needs. README.md's quick start uses the scripts directly.
.PHONY: demo test lint bench queue-cost fmt

demo:
	scripts/demo.sh

test:
	scripts/test.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

fmt:
	cargo fmt --all

# Heavy benchmarks: run by hand, record results in BENCHMARKS.md (never part of CI).
bench:
	cargo build --release --locked -p raibid-cli
	./target/release/raibid bench queue

# Redis instructions per enqueue/claim/ack under callgrind (needs valgrind); repeatable where
# timings are not.
queue-cost:
	scripts/queue-cost.sh
