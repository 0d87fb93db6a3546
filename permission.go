package streamapi

import "context"

// Permission decides whether a user may perform an action on a resource.
// pk is the parsed primary key for detail actions and subscriptions naming
// one object, and nil otherwise. action is the wire name ("create",
// "retrieve", "subscribe", a custom action's name...).
type Permission interface {
	HasPermission(ctx context.Context, u *User, action string, pk any) bool
}

// PermissionFunc adapts a function to Permission.
type PermissionFunc func(ctx context.Context, u *User, action string, pk any) bool

// HasPermission calls f.
func (f PermissionFunc) HasPermission(ctx context.Context, u *User, action string, pk any) bool {
	return f(ctx, u, action, pk)
}

// AllowAny lets everyone do everything. It is the default.
var AllowAny Permission = PermissionFunc(func(context.Context, *User, string, any) bool { return true })

// IsAuthenticated allows authenticated users only.
var IsAuthenticated Permission = PermissionFunc(func(_ context.Context, u *User, _ string, _ any) bool {
	return u.Authenticated()
})
