"""Records and where they live: versioned records (:mod:`.records`), the append-only JSON Lines store
(:mod:`.store`) and the environment a record was made in (:mod:`.environment`)."""
