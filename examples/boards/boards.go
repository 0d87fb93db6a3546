// Package boards is a team kanban app declared with streamapi: boards,
// their members, columns and cards, and a "move" detail action. Who sees
// what follows the membership table, with a relation scope
// (resource.Membership): no copied column, no index of the app's own.
//
//	stream boards   model board.board   {id, name, owner}
//	stream members  model board.member  {id, board, user}
//	stream columns  model board.column  {id, board, name, position}
//	stream cards    model board.card    {id, column, board, title, position, assignee}
//
// Every action needs an authenticated user. A board is visible to its
// members, and so are its members, columns and cards; the creator of a
// board is its owner and its first member (in the same transaction); only
// the owner renames or deletes the board, and adds or removes members.
// Members create, rename, reorder and delete columns, and create, edit,
// move and delete cards. Deleting a board deletes its members, columns and
// cards in the same transaction, each with its event.
//
// Cards keep their positions in a column contiguous from 0: a card is
// created at its position (at most the column's end), the cards at and
// after it shifting down; a deleted card's followers shift up; "move"
// (data {"column": ID, "position": N}) moves a card within or across
// columns, shifting the others in both. Every card whose position changed
// sends an update. Column and position change only through move (they are
// write-once). Writers lock in one order, board, then columns (by id),
// then cards, so that none waits for another in a cycle: a card's create
// locks its board and column, its update, delete and move its column(s)
// first (LockFirst, and move's own locks), a board's deletion the board.
// Concurrent moves therefore serialize per column.
package boards

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"slices"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/resource"
	"github.com/streamapi/streamapi/store/sqlstore"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"
)

// Migrations holds the app's schema, one folder per SQL dialect.
//
//go:embed migrations
var migrations embed.FS

// Migrations returns the schema migrations, for sqlstore.DB.Migrate.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		panic(err) // the embedded folder is always there
	}
	return sub
}

// Board is a kanban board.
type Board struct {
	bun.BaseModel `bun:"table:board_board" json:"-"`

	ID   int64  `bun:"id,pk,autoincrement" json:"id"`
	Name string `bun:"name,notnull" json:"name" validate:"required,max=100"`
	// Owner is the sub of the user who created it.
	Owner string `bun:"owner,notnull" json:"owner" streamapi:"readonly"`
}

// Member says that a user belongs to a board.
type Member struct {
	bun.BaseModel `bun:"table:board_member" json:"-"`

	ID      int64  `bun:"id,pk,autoincrement" json:"id"`
	BoardID int64  `bun:"board_id,notnull" json:"board" validate:"required" streamapi:"writeonce"`
	User    string `bun:"user_id,notnull" json:"user" validate:"required,max=150" streamapi:"writeonce"`
}

// Column is a column of a board.
type Column struct {
	bun.BaseModel `bun:"table:board_column" json:"-"`

	ID       int64  `bun:"id,pk,autoincrement" json:"id"`
	BoardID  int64  `bun:"board_id,notnull" json:"board" validate:"required" streamapi:"writeonce"`
	Name     string `bun:"name,notnull" json:"name" validate:"required,max=100"`
	Position int64  `bun:"position,notnull" json:"position" validate:"gte=0"`
}

// Card is a card in a column.
type Card struct {
	bun.BaseModel `bun:"table:board_card" json:"-"`

	ID       int64 `bun:"id,pk,autoincrement" json:"id"`
	ColumnID int64 `bun:"column_id,notnull" json:"column" validate:"required" streamapi:"writeonce"`
	// BoardID follows the column, set by the server.
	BoardID  int64   `bun:"board_id,notnull" json:"board" streamapi:"readonly"`
	Title    string  `bun:"title,notnull" json:"title" validate:"required,max=200"`
	Position int64   `bun:"position,notnull" json:"position" validate:"gte=0" streamapi:"writeonce"`
	Assignee *string `bun:"assignee" json:"assignee" validate:"omitempty,max=150"`
}

// Move is the data of the cards' move action.
type Move struct {
	Column   int64 `json:"column" validate:"required"`
	Position int64 `json:"position" validate:"gte=0"`
}

// App is the boards app's resources.
type App struct {
	Boards  *resource.Resource[Board]
	Members *resource.Resource[Member]
	Columns *resource.Resource[Column]
	Cards   *resource.Resource[Card]
	// Membership is the relation the scopes follow: a user belongs to the
	// boards they have a member row of.
	Membership *resource.Relation
}

// Resources returns the app's resources, for server.Config.
func (a *App) Resources() []streamapi.Resource {
	return []streamapi.Resource{a.Boards, a.Members, a.Columns, a.Cards}
}

// authenticated lets only authenticated users in.
var authenticated = streamapi.PermissionFunc(func(_ context.Context, u *streamapi.User, _ string, _ any) bool {
	return u.Authenticated()
})

// boardDeletion marks the context of a board's deletion: its rows go
// without the per-row rules (the owner's membership, card shifting).
type boardDeletion struct{}

func deletingBoard(ctx context.Context) bool { return ctx.Value(boardDeletion{}) != nil }

// New declares the boards resources on store.
func New(store streamapi.Store) (*App, error) {
	a := &App{}
	var err error
	a.Members, err = resource.New(resource.Config[Member]{
		Stream:     "members",
		Label:      "board.member",
		Store:      store,
		Permission: authenticated,
		Actions:    []string{streamapi.ActionCreate, streamapi.ActionRetrieve, streamapi.ActionDelete, streamapi.ActionList, streamapi.ActionSubscribe, streamapi.ActionUnsubscribe, streamapi.ActionSubscribeInstance, streamapi.ActionUnsubscribeInstance},
		// The relation is declared on this resource, after it: the
		// closure reads it when called.
		Scope:        func(u *streamapi.User) resource.Q { return a.Membership.Includes(u, "board") },
		Validate:     a.validateMember,
		BeforeDelete: a.beforeDeleteMember,
		Filters:      map[string][]string{"board": {"exact", "in"}, "user": {"exact"}},
		Ordering:     []string{"id"},
	})
	if err != nil {
		return nil, fmt.Errorf("boards: %w", err)
	}
	if a.Membership, err = resource.Membership(a.Members, "board", "user"); err != nil {
		return nil, fmt.Errorf("boards: %w", err)
	}
	a.Boards, err = resource.New(resource.Config[Board]{
		Stream:     "boards",
		Label:      "board.board",
		Store:      store,
		Permission: authenticated,
		Scope:      func(u *streamapi.User) resource.Q { return a.Membership.Includes(u, "id") },
		Defaults: func(ctx context.Context, b *Board) {
			if u := streamapi.UserFrom(ctx); u != nil {
				b.Owner = u.ID
			}
		},
		ObjectPermission: func(_ context.Context, u *streamapi.User, action string, b *Board) bool {
			switch action {
			case streamapi.ActionUpdate, streamapi.ActionPatch, streamapi.ActionDelete:
				return u != nil && u.ID == b.Owner
			}
			return true
		},
		// The creator becomes a member in the same transaction.
		AfterWrite: func(ctx context.Context, b *Board, action string) error {
			if action != streamapi.ActionCreate {
				return nil
			}
			return a.Members.Create(ctx, &Member{BoardID: b.ID, User: b.Owner})
		},
		BeforeDelete: a.deleteBoardRows,
		Search:       []string{"name"},
		Ordering:     []string{"id", "name"},
	})
	if err != nil {
		return nil, fmt.Errorf("boards: %w", err)
	}
	a.Columns, err = resource.New(resource.Config[Column]{
		Stream:     "columns",
		Label:      "board.column",
		Store:      store,
		Permission: authenticated,
		Scope:      func(u *streamapi.User) resource.Q { return a.Membership.Includes(u, "board") },
		Validate: func(ctx context.Context, c *Column, action string) error {
			if action != streamapi.ActionCreate {
				return nil
			}
			_, err := a.visibleBoard(ctx, c.BoardID, "board")
			return err
		},
		BeforeDelete: func(ctx context.Context, c *Column) error {
			if deletingBoard(ctx) {
				return nil
			}
			n, err := a.Cards.Table().Count(ctx, streamapi.ListQuery{Equal: map[string]any{"column_id": c.ID}})
			if err != nil {
				return err
			}
			if n > 0 {
				return streamapi.Errorf(streamapi.EINVALID, "The column has %d cards: move or delete them first.", n)
			}
			return nil
		},
		Filters:  map[string][]string{"board": {"exact", "in"}},
		Ordering: []string{"id", "position"},
	})
	if err != nil {
		return nil, fmt.Errorf("boards: %w", err)
	}
	a.Cards, err = resource.New(resource.Config[Card]{
		Stream:       "cards",
		Label:        "board.card",
		Store:        store,
		Permission:   authenticated,
		Scope:        func(u *streamapi.User) resource.Q { return a.Membership.Includes(u, "board") },
		Validate:     a.validateCard,
		BeforeWrite:  a.placeCard,
		BeforeDelete: a.closeGap,
		// Column, then card: the order of move and create.
		LockFirst: func(ctx context.Context, pk any) error {
			c, err := a.Cards.Get(ctx, pk)
			if err != nil {
				return err
			}
			col := c.ColumnID
			if _, err := a.lockColumns(ctx, col); err != nil {
				return err
			}
			if err := a.Cards.Table().Lock(ctx, c, pk); err != nil {
				return err
			}
			if c.ColumnID != col {
				return streamapi.ErrRetry // moved between the read and the lock
			}
			return nil
		},
		Filters:  map[string][]string{"board": {"exact", "in"}, "column": {"exact", "in"}, "assignee": {"exact", "isnull"}},
		Ordering: []string{"id", "position"},
		Search:   []string{"title"},
		DetailActions: []resource.DetailAction[Card]{{
			Name:     "move",
			Func:     a.move,
			Unlocked: true, // it locks the columns, then the card
		}},
	})
	if err != nil {
		return nil, fmt.Errorf("boards: %w", err)
	}
	return a, nil
}

// invalidPK is DRF's PrimaryKeyRelatedField error, on field.
func invalidPK(field string, id int64) error {
	errs := streamapi.FieldErrors{}
	errs.Add(field, fmt.Sprintf("Invalid pk \"%d\" - object does not exist.", id))
	return errs.Err()
}

// visibleBoard loads a board the user may see, or answers field's
// invalid-pk error, as for a board that does not exist.
func (a *App) visibleBoard(ctx context.Context, id int64, field string) (*Board, error) {
	ok, err := a.Boards.Exists(ctx, id)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, invalidPK(field, id)
	}
	return a.Boards.Get(ctx, id)
}

// validateMember: the board must be one the user sees (or, while it is
// being created, owns), only its owner adds members, and a user is a
// member once.
func (a *App) validateMember(ctx context.Context, m *Member, action string) error {
	if action != streamapi.ActionCreate {
		return nil
	}
	u := streamapi.UserFrom(ctx)
	b, err := a.Boards.Get(ctx, m.BoardID)
	if streamapi.ErrorCode(err) == streamapi.ENOTFOUND {
		return invalidPK("board", m.BoardID)
	}
	if err != nil {
		return err
	}
	if u == nil || u.ID != b.Owner {
		if ok, err := a.Boards.Exists(ctx, m.BoardID); err != nil {
			return err
		} else if !ok {
			return invalidPK("board", m.BoardID)
		}
		return streamapi.PermissionDenied(u)
	}
	// The owner (and only the owner) takes the board's row lock, which
	// serializes the board's member writes: of two concurrent adds of one
	// user the second finds the first and answers 400 on user, not a
	// unique-index conflict.
	if err := a.Boards.Table().Lock(ctx, b, m.BoardID); streamapi.ErrorCode(err) == streamapi.ENOTFOUND {
		return invalidPK("board", m.BoardID)
	} else if err != nil {
		return err
	}
	n, err := a.Members.Table().Count(ctx, streamapi.ListQuery{Equal: map[string]any{"board_id": m.BoardID, "user_id": m.User}})
	if err != nil {
		return err
	}
	if n > 0 {
		errs := streamapi.FieldErrors{}
		errs.Add("user", "This user is already a member of this board.")
		return errs.Err()
	}
	return nil
}

// beforeDeleteMember: only the board's owner removes members, and not
// themselves (a board keeps its owner).
func (a *App) beforeDeleteMember(ctx context.Context, m *Member) error {
	if deletingBoard(ctx) {
		return nil
	}
	b, err := a.Boards.Get(ctx, m.BoardID)
	if err != nil {
		return err
	}
	u := streamapi.UserFrom(ctx)
	if u == nil || u.ID != b.Owner {
		return streamapi.PermissionDenied(u)
	}
	if m.User == b.Owner {
		return streamapi.Errorf(streamapi.EINVALID, "The board's owner cannot be removed; delete the board instead.")
	}
	return nil
}

// deleteBoardRows deletes a board's cards, columns and members through
// their resources, in the board's transaction, so that every delete is an
// event.
func (a *App) deleteBoardRows(ctx context.Context, b *Board) error {
	// On PostgreSQL the framework's row lock (FOR NO KEY UPDATE) lets a
	// concurrent insert of a card or column check its foreign key against
	// the board; FOR UPDATE makes it wait for the deletion instead, and
	// placeCard locks the board before the column, in this order.
	if tx := sqlstore.Tx(ctx); tx != nil && tx.Dialect().Name() == dialect.PG {
		if _, err := tx.NewSelect().Table("board_board").Column("id").Where("id = ?", b.ID).For("UPDATE").Exec(ctx); err != nil {
			return err
		}
	}
	// Then its columns, in id order: every writer of a card holds its
	// column first, so the cards listed next stay as listed, and the
	// deletion takes the order board, columns, cards.
	cols, err := a.Columns.List(ctx, streamapi.ListQuery{Equal: map[string]any{"board": b.ID}})
	if err != nil {
		return err
	}
	ids := make([]int64, len(cols))
	for i := range cols {
		ids[i] = cols[i].ID
	}
	if _, err := a.lockColumns(ctx, ids...); err != nil {
		return err
	}
	ctx = context.WithValue(ctx, boardDeletion{}, true)
	if err := deleteAll(ctx, a.Cards, b.ID, func(c *Card) int64 { return c.ID }); err != nil {
		return err
	}
	if err := deleteAll(ctx, a.Columns, b.ID, func(c *Column) int64 { return c.ID }); err != nil {
		return err
	}
	return deleteAll(ctx, a.Members, b.ID, func(m *Member) int64 { return m.ID })
}

// deleteAll deletes, one by one through r, the objects of board.
func deleteAll[T any](ctx context.Context, r *resource.Resource[T], board int64, id func(*T) int64) error {
	objs, err := r.List(ctx, streamapi.ListQuery{Equal: map[string]any{"board": board}})
	if err != nil {
		return err
	}
	for i := range objs {
		if err := r.Delete(ctx, id(&objs[i])); err != nil {
			return err
		}
	}
	return nil
}

// validateCard: on create, the column must be one of a board the user
// sees.
func (a *App) validateCard(ctx context.Context, c *Card, action string) error {
	if action != streamapi.ActionCreate {
		return nil
	}
	ok, err := a.Columns.Exists(ctx, c.ColumnID)
	if err != nil {
		return err
	}
	if !ok {
		return invalidPK("column", c.ColumnID)
	}
	return nil
}

// lockColumns locks the columns ids (in id order, so that two writers
// never wait for each other in a cycle) and returns them by id.
func (a *App) lockColumns(ctx context.Context, ids ...int64) (map[int64]*Column, error) {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	out := map[int64]*Column{}
	for _, id := range ids {
		if out[id] != nil {
			continue
		}
		col := new(Column)
		if err := a.Columns.Table().Lock(ctx, col, id); err != nil {
			return nil, err
		}
		out[id] = col
	}
	return out, nil
}

// placeCard, on create: the card takes the board of its column and its
// place in it (at most the column's end), the cards from there on
// shifting down by one.
func (a *App) placeCard(ctx context.Context, c *Card, action string) error {
	if action != streamapi.ActionCreate {
		return nil
	}
	col, err := a.Columns.Get(ctx, c.ColumnID)
	if err != nil {
		return err
	}
	// Board, then column: a board being deleted holds its row, so the
	// card waits, then finds the column gone.
	if err := a.Boards.Table().Lock(ctx, new(Board), col.BoardID); streamapi.ErrorCode(err) == streamapi.ENOTFOUND {
		return invalidPK("column", c.ColumnID)
	} else if err != nil {
		return err
	}
	cols, err := a.lockColumns(ctx, c.ColumnID)
	if streamapi.ErrorCode(err) == streamapi.ENOTFOUND {
		return invalidPK("column", c.ColumnID)
	} else if err != nil {
		return err
	}
	c.BoardID = cols[c.ColumnID].BoardID
	n, err := a.Cards.Table().Count(ctx, streamapi.ListQuery{Equal: map[string]any{"column_id": c.ColumnID}})
	if err != nil {
		return err
	}
	c.Position = min(c.Position, int64(n))
	_, err = a.Cards.UpdateWhere(ctx, resource.And(resource.Where("column", c.ColumnID), resource.Where("position__gte", c.Position)), resource.Add("position", 1))
	return err
}

// closeGap, on delete: the cards after the deleted one shift up by one.
func (a *App) closeGap(ctx context.Context, c *Card) error {
	if deletingBoard(ctx) {
		return nil
	}
	if _, err := a.lockColumns(ctx, c.ColumnID); err != nil {
		return err
	}
	_, err := a.Cards.UpdateWhere(ctx, resource.And(resource.Where("column", c.ColumnID), resource.Where("position__gt", c.Position)), resource.Add("position", -1))
	return err
}

// move moves a card to data's column and position (at most that column's
// end), shifting the cards between in one column, or after the old and
// new places across two, and answers the card as moved.
func (a *App) move(ctx context.Context, req *streamapi.Request, card *Card) (any, int, error) {
	in, err := resource.Input[Move](req)
	if err != nil {
		return nil, 0, err
	}
	if ok, err := a.Columns.Exists(ctx, in.Column); err != nil {
		return nil, 0, err
	} else if !ok {
		return nil, 0, invalidPK("column", in.Column)
	}
	// Columns first, then the card: every writer of a column's cards
	// holds the column, so the card read again under it stays there.
	from := card.ColumnID
	cols, err := a.lockColumns(ctx, from, in.Column)
	if err != nil {
		return nil, 0, err
	}
	c := new(Card)
	if err := a.Cards.Table().Lock(ctx, c, card.ID); err != nil {
		return nil, 0, err
	}
	if c.ColumnID != from {
		// Moved by another writer between the read and the locks: run
		// again from the read (and its visibility check), rather than
		// lock a third column out of order.
		return nil, 0, streamapi.ErrRetry
	}
	n, err := a.Cards.Table().Count(ctx, streamapi.ListQuery{Equal: map[string]any{"column_id": in.Column}})
	if err != nil {
		return nil, 0, err
	}
	to := in.Position
	if from == in.Column {
		to = min(to, int64(n-1))
		switch {
		case to < c.Position:
			_, err = a.Cards.UpdateWhere(ctx, resource.And(resource.Where("column", from), resource.Where("position__gte", to), resource.Where("position__lt", c.Position)), resource.Add("position", 1))
		case to > c.Position:
			_, err = a.Cards.UpdateWhere(ctx, resource.And(resource.Where("column", from), resource.Where("position__gt", c.Position), resource.Where("position__lte", to)), resource.Add("position", -1))
		}
	} else {
		to = min(to, int64(n))
		if _, err = a.Cards.UpdateWhere(ctx, resource.And(resource.Where("column", from), resource.Where("position__gt", c.Position)), resource.Add("position", -1)); err == nil {
			_, err = a.Cards.UpdateWhere(ctx, resource.And(resource.Where("column", in.Column), resource.Where("position__gte", to)), resource.Add("position", 1))
		}
	}
	if err != nil {
		return nil, 0, err
	}
	if c.ColumnID == in.Column && c.Position == to {
		return c, 0, nil
	}
	// Read again: the shifts above may not have touched it, but the
	// column and position are written here, by the table, with its event.
	if err := a.Cards.Table().Lock(ctx, c, card.ID); err != nil {
		return nil, 0, err
	}
	c.ColumnID, c.BoardID, c.Position = in.Column, cols[in.Column].BoardID, to
	if err := a.Cards.Table().Update(ctx, c); err != nil {
		return nil, 0, err
	}
	return c, 0, nil
}
