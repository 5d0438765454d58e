"""The HTTP edges: wire types, framing and error bodies. Nothing below `faisca.api` sees a wire type."""
