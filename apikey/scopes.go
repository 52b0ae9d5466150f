package apikey

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// ScopeManage is the scope that lets a key manage the account's keys over
// an API (create, list, revoke). Keys without scopes allow everything,
// this included.
const ScopeManage = "manage"

// ParentMetadataKey is the metadata entry that records which key created a
// key through CreateChild; Revoke and DisableLeaked follow it to the
// children. Metadata keys starting with "keyledger:" are reserved: hosts
// cannot set or change them.
const ParentMetadataKey = "keyledger:parent_key_id"

const reservedMetadataPrefix = "keyledger:"

// reservedMetadata reports whether m names a reserved key.
func reservedMetadata(m map[string]string) bool {
	for k := range m {
		if strings.HasPrefix(k, reservedMetadataPrefix) {
			return true
		}
	}
	return false
}

// CanManage checks that a verified key may manage keys of environment env
// ("" for any, such as a listing that shows only what the key may see):
// it must allow ScopeManage, and a test key may only manage test keys. It
// returns ErrScopeNotAllowed or ErrEnvironmentNotAllowed.
func (v *Verified) CanManage(env Environment) error {
	if err := v.Permit("", ScopeManage); err != nil {
		return err
	}
	if v.Environment == EnvTest && env != "" && env != EnvTest {
		return ErrEnvironmentNotAllowed
	}
	return nil
}

// CreateChild creates a key on the authority of another: the parent must
// allow ScopeManage (CanManage); the new key belongs to the parent's
// account, gets at most the parent's scopes and models (the parent's when
// p leaves them empty), is a test key if the parent is one, and records
// its parent (ParentMetadataKey), so that revoking or disabling the parent
// revokes it too. p.AccountID is ignored. Besides Create's errors it
// returns ErrScopeNotAllowed, ErrModelNotAllowed and
// ErrEnvironmentNotAllowed.
func (s *Service) CreateChild(ctx context.Context, parent *Verified, p CreateParams) (RawKey, APIKey, error) {
	ti := s.format.typeIndex(p.Type)
	if ti < 0 {
		return "", APIKey{}, fmt.Errorf("%w: %q", ErrInvalidType, p.Type)
	}
	if err := parent.CanManage(s.format.types[ti].Environment); err != nil {
		return "", APIKey{}, err
	}
	if len(parent.Scopes) > 0 {
		if len(p.Scopes) == 0 {
			p.Scopes = slices.Clone(parent.Scopes)
		}
		for _, sc := range p.Scopes {
			if !slices.Contains(parent.Scopes, sc) {
				return "", APIKey{}, fmt.Errorf("%w: the parent key lacks %q", ErrScopeNotAllowed, sc)
			}
		}
	}
	if len(parent.Models) > 0 {
		if len(p.Models) == 0 {
			p.Models = slices.Clone(parent.Models)
		}
		for _, m := range p.Models {
			if !slices.Contains(parent.Models, m) {
				return "", APIKey{}, fmt.Errorf("%w: the parent key lacks %q", ErrModelNotAllowed, m)
			}
		}
	}
	if reservedMetadata(p.Metadata) {
		return "", APIKey{}, fmt.Errorf("%w: keys starting with %q are reserved", ErrInvalidMetadata, reservedMetadataPrefix)
	}
	md := cloneMap(p.Metadata)
	if md == nil {
		md = map[string]string{}
	}
	md[ParentMetadataKey] = parent.KeyID
	p.AccountID, p.Metadata = parent.AccountID, md
	return s.create(ctx, p)
}

// cascade revokes every active descendant of keyID (keys created through
// CreateChild from it, and theirs) with status st, so that a revoked or
// leaked key does not live on in a key it made.
func (s *Service) cascade(ctx context.Context, accountID, keyID string, st Status, cause error) error {
	children := map[string][]string{}
	active := map[string]bool{}
	cursor := ""
	for {
		ks, err := s.store.ListAPIKeys(ctx, accountID, cursor, 500)
		if err != nil {
			return err
		}
		for _, k := range ks {
			if parent := k.Metadata[ParentMetadataKey]; parent != "" {
				children[parent] = append(children[parent], k.ID)
			}
			active[k.ID] = k.Status == StatusActive
		}
		if len(ks) < 500 {
			break
		}
		cursor = ks[len(ks)-1].ID
	}
	queue := slices.Clone(children[keyID])
	seen := map[string]bool{keyID: true}
	for len(queue) > 0 {
		id := queue[0]
		queue = queue[1:]
		if seen[id] {
			continue
		}
		seen[id] = true
		queue = append(queue, children[id]...)
		if !active[id] {
			continue
		}
		if _, err := s.apply(ctx, accountID, id, Update{Status: &st}, s.opt.Now(), cause); err != nil {
			return err
		}
	}
	return nil
}
