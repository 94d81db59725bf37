"""The pure domain of mailfleet: policies, addresses, grouping, errors. No I/O."""
