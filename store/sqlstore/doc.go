// Package sqlstore implements streamapi.Store on SQL through bun: SQLite
// (modernc.org/sqlite, pure Go) today, PostgreSQL next.
//
// Open takes a URL-like DSN:
//
//	sqlite:./streamapi.db
//
// SQLite runs in WAL mode with a busy timeout, foreign keys on, one writer
// connection (BEGIN IMMEDIATE) and a pool of read-only readers, so writers
// never fail with SQLITE_BUSY and readers never block them.
//
// Models are plain structs with bun tags naming their table and primary key,
// and json tags naming their wire fields:
//
//	type Question struct {
//		bun.BaseModel `bun:"table:polls_question"`
//		ID            int64  `bun:"id,pk,autoincrement" json:"id"`
//		Text          string `bun:"question_text" json:"question_text"`
//	}
//
// Schema changes are bun migrations: Migrate applies the *.up.sql files
// found in a file system (typically embedded), under a folder named after the
// dialect ("sqlite").
package sqlstore
