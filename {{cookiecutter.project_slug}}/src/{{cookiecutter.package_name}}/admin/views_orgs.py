"""Admin views of the orgs module: organizations, memberships, invitations and the
organizations' API keys.

Searchable by name (organizations), by the member's or invitee's email and the
organization's name (memberships, invitations), and by the organization's name or the
key's name or prefix (API keys). Only an organization's name is editable here: roles,
members, invitations and keys change through the API, whose rules keep an owner in every
organization, and deleting an organization goes through the API too (it cancels its
subscription). Invitation token hashes are never shown; a key is revoked in the API
keys view, like any other.

The admin acts for no single organization: its sessions pass row-level security
(admin/module.py), so these views list every organization's rows on PostgreSQL too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from sqladmin import ModelView
from sqladmin.filters import AllUniqueStringValuesFilter
from sqlalchemy import ColumnElement, Select, or_, select

from {{ cookiecutter.package_name }}.auth.models import ApiKey, User
from {{ cookiecutter.package_name }}.orgs.models import (
    Invitation,
    Membership,
    Organization,
    OrgApiKey,
)

CATEGORY = "Organizations"


def _org_named(org_id: Any, term: str) -> ColumnElement[bool]:
    found: ColumnElement[bool] = org_id.in_(
        select(Organization.id).where(Organization.name.ilike(f"%{term}%"))
    )
    return found


def _account_with_email(user_id: Any, term: str) -> ColumnElement[bool]:
    found: ColumnElement[bool] = user_id.in_(select(User.id).where(User.email.ilike(f"%{term}%")))
    return found


class OrganizationAdmin(ModelView, model=Organization):
    name = "Organization"
    name_plural = "Organizations"
    icon = "fa-solid fa-building"
    category = CATEGORY

    column_list: ClassVar[Sequence[Any]] = [
        Organization.name,
        Organization.id,
        Organization.personal_for,
        Organization.created_at,
    ]
    column_details_list: ClassVar[Sequence[Any]] = [*column_list, Organization.updated_at]
    column_labels: ClassVar[dict[Any, str]] = {
        Organization.name: "Name",
        Organization.id: "ID",
        Organization.personal_for: "Personal organization of (user ID)",
        Organization.created_at: "Created",
        Organization.updated_at: "Updated",
    }
    column_searchable_list: ClassVar[Sequence[Any]] = [Organization.name]
    column_default_sort: ClassVar[Any] = (Organization.created_at, True)
    form_columns: ClassVar[Sequence[Any]] = [Organization.name]
    can_create = False  # an organization needs an owner: POST /api/v1/orgs
    can_delete = False  # DELETE /api/v1/orgs/{org_id} cancels its subscription first


class MembershipAdmin(ModelView, model=Membership):
    name = "Membership"
    name_plural = "Memberships"
    icon = "fa-solid fa-users"
    category = CATEGORY

    column_list: ClassVar[Sequence[Any]] = [
        Membership.org_id,
        Membership.user_id,
        Membership.role,
        Membership.created_at,
    ]
    column_labels: ClassVar[dict[Any, str]] = {
        Membership.org_id: "Organization ID",
        Membership.user_id: "User ID",
        Membership.role: "Role",
        Membership.created_at: "Joined",
    }
    # The search box searches the member's email and the organization's name (search_query).
    column_searchable_list: ClassVar[Sequence[Any]] = [Membership.role]
    column_filters: ClassVar[Sequence[Any]] = [
        AllUniqueStringValuesFilter(Membership.role, title="Role")
    ]
    column_default_sort: ClassVar[Any] = (Membership.created_at, True)
    can_create = False
    can_edit = False
    can_delete = False

    def search_placeholder(self) -> str:
        return "Email, organization name"

    def search_query(self, stmt: Select[Any], term: str) -> Select[Any]:
        return stmt.where(
            or_(_account_with_email(Membership.user_id, term), _org_named(Membership.org_id, term))
        )


class InvitationAdmin(ModelView, model=Invitation):
    name = "Invitation"
    name_plural = "Invitations"
    icon = "fa-solid fa-envelope-open-text"
    category = CATEGORY

    column_list: ClassVar[Sequence[Any]] = [
        Invitation.email,
        Invitation.org_id,
        Invitation.role,
        Invitation.created_at,
        Invitation.expires_at,
        Invitation.accepted_at,
        Invitation.revoked_at,
    ]
    column_details_list: ClassVar[Sequence[Any]] = [
        Invitation.id,
        *column_list,
        Invitation.invited_by,
        Invitation.accepted_by,
    ]
    column_labels: ClassVar[dict[Any, str]] = {
        Invitation.id: "ID",
        Invitation.email: "Email",
        Invitation.org_id: "Organization ID",
        Invitation.role: "Role",
        Invitation.created_at: "Sent",
        Invitation.expires_at: "Expires",
        Invitation.accepted_at: "Accepted",
        Invitation.revoked_at: "Revoked",
        Invitation.invited_by: "Invited by (user ID)",
        Invitation.accepted_by: "Accepted by (user ID)",
    }
    column_searchable_list: ClassVar[Sequence[Any]] = [Invitation.email]
    column_filters: ClassVar[Sequence[Any]] = [
        AllUniqueStringValuesFilter(Invitation.role, title="Role")
    ]
    column_default_sort: ClassVar[Any] = (Invitation.created_at, True)
    can_create = False
    can_edit = False
    can_delete = False

    def search_placeholder(self) -> str:
        return "Email, organization name"

    def search_query(self, stmt: Select[Any], term: str) -> Select[Any]:
        return stmt.where(
            or_(Invitation.email.ilike(f"%{term}%"), _org_named(Invitation.org_id, term))
        )


def _key_named(api_key_id: Any, term: str) -> ColumnElement[bool]:
    pattern = f"%{term}%"
    keys = select(ApiKey.id).where(or_(ApiKey.name.ilike(pattern), ApiKey.prefix.ilike(pattern)))
    found: ColumnElement[bool] = api_key_id.in_(keys)
    return found


class OrgApiKeyAdmin(ModelView, model=OrgApiKey):
    name = "Organization API key"
    name_plural = "Organization API keys"
    icon = "fa-solid fa-key"
    category = CATEGORY

    column_list: ClassVar[Sequence[Any]] = [
        OrgApiKey.org_id,
        OrgApiKey.api_key_id,
        OrgApiKey.role,
    ]
    column_labels: ClassVar[dict[Any, str]] = {
        OrgApiKey.org_id: "Organization ID",
        OrgApiKey.api_key_id: "API key ID",
        OrgApiKey.role: "Role (at most)",
    }
    # The search box searches the organization's name and the key's name and prefix.
    column_searchable_list: ClassVar[Sequence[Any]] = [OrgApiKey.role]
    column_filters: ClassVar[Sequence[Any]] = [
        AllUniqueStringValuesFilter(OrgApiKey.role, title="Role")
    ]
    column_default_sort: ClassVar[Any] = (OrgApiKey.org_id, False)
    can_create = False  # made through the API, by a member, with a role up to theirs
    can_edit = False
    can_delete = False  # revoked in the API keys view (or through the API)

    def search_placeholder(self) -> str:
        return "Organization name, key name or prefix"

    def search_query(self, stmt: Select[Any], term: str) -> Select[Any]:
        return stmt.where(
            or_(_org_named(OrgApiKey.org_id, term), _key_named(OrgApiKey.api_key_id, term))
        )


VIEWS: tuple[type[ModelView], ...] = (
    OrganizationAdmin,
    MembershipAdmin,
    InvitationAdmin,
    OrgApiKeyAdmin,
)
