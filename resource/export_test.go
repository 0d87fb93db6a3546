package resource

import "time"

// SetNow replaces rel's clock, for tests of the resume grace.
func SetNow(rel *Relation, now func() time.Time) { rel.now = now }
