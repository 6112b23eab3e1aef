"""Pure scheduling decisions: queue orderings, placement, preemption, rebalancing. No I/O."""
