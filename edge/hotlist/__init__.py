"""Hot lists: signed bundles from headquarters and approved manual entries, matched against every read."""
