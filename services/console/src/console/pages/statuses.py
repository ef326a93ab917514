"""Settings > Order statuses: the partner's statuses by type, the Status property dialog (add, edit), archive,
restore and reordering. Every change goes to the status registry's API, with the status's ETag."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.datastructures import FormData

from console.backends import BackendProblem, Service, segment
from console.catalog import STATUS_TYPES, choices, partner_statuses
from console.domain import LANGUAGES
from console.web import N_, Marketer, NotFound, Page, PartnerUser, flash

router = APIRouter(prefix="/settings/statuses")

POSITION_STEP = 10
CHANGED_BY_SOMEONE_ELSE = N_("This status was changed by someone else since you opened it. Reload to see the change.")
LIST_CHANGED = N_("Someone else added or archived a status of this type meanwhile: nothing was moved. Try again.")
# The registry's conflicts that concern one field of the dialog, by their code.
FIELD_OF_CONFLICT = {"status_exists": "code", "initial_status_taken": "is_initial"}
# A status code the registry's pattern refuses: said in words, not as the pattern.
BAD_CODE = N_("Use lower-case Latin letters, digits, “-” and “_” only.")
KNOWN_CONFLICTS = {
    "status_exists": N_("A status with this code exists already: choose another code."),
    "initial_status_taken": N_("Another status of this type is the initial one already: unset it there first."),
}


@dataclass
class StatusForm:
    """The Status property dialog's fields as typed, so a refused form comes back as the user left it."""

    name: str = ""
    type: str = "general"
    code: str = ""
    include_in_analytics: bool = False
    localized_names: dict[str, str] = field(default_factory=dict)
    description: str = ""
    position: str = ""  # empty: after the last status of its type
    is_initial: bool = False
    any_next: bool = True
    allowed_next: list[str] = field(default_factory=list)
    version: str = ""

    @classmethod
    def of(cls, status: dict[str, Any]) -> StatusForm:
        allowed = status.get("allowed_next")
        return cls(
            name=status["name"],
            type=status["type"],
            code=status["code"],
            include_in_analytics=status["include_in_analytics"],
            localized_names=dict(status.get("localized_names") or {}),
            description=status.get("description") or "",
            position=str(status.get("position", 0)),
            is_initial=status.get("is_initial", False),
            any_next=allowed is None,
            allowed_next=list(allowed or []),
            version=str(status["version"]),
        )

    @classmethod
    def parse(cls, form: FormData) -> StatusForm:
        return cls(
            name=str(form.get("name", "")).strip(),
            type=str(form.get("type", "general")),
            code=str(form.get("code", "")).strip(),
            include_in_analytics=form.get("include_in_analytics") == "on",
            localized_names={lang: str(form.get(f"name_{lang}", "")).strip() for lang in LANGUAGES},
            description=str(form.get("description", "")).strip(),
            position=str(form.get("position", "")).strip(),
            is_initial=form.get("is_initial") == "on",
            any_next=form.get("next_mode", "any") == "any",
            allowed_next=[str(code) for code in form.getlist("allowed_next")],
            version=str(form.get("version", "")),
        )

    def fields(self) -> dict[str, Any]:
        """The registry's body: the fields a partner sets (code and type only at creation)."""
        position: Any = int(self.position) if self.position.isdigit() else self.position or None
        fields = {
            "name": self.name,
            "localized_names": {lang: name for lang, name in self.localized_names.items() if name},
            "description": self.description or None,
            "include_in_analytics": self.include_in_analytics,
            "position": position,
            "is_initial": self.is_initial,
            "allowed_next": None if self.any_next else self.allowed_next,
        }
        return {name: value for name, value in fields.items() if name != "position" or value is not None}


async def _next_position(page: Page, status_type: str) -> int:
    """After the last status of its type, so a new status is added at the end of its group."""
    positions = [s["position"] for s in await partner_statuses(page, include_archived=True) if s["type"] == status_type]
    return max(positions, default=0) + POSITION_STEP


def _by_type(statuses: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    return {t: [s for s in statuses if s["type"] == t] for t in STATUS_TYPES}


@router.get("")
async def list_statuses(page: PartnerUser, archived: bool = False) -> Response:
    statuses = await partner_statuses(page, include_archived=archived)
    names = {s["code"]: page.fmt.status_name(s) for s in statuses}
    blocking = page.request.session.pop("blocking", None)
    return page.render(
        "statuses/list.html", groups=_by_type(statuses), names=names, show_archived=archived, blocking=blocking
    )


async def _dialog(
    page: Page, form: StatusForm, *, editing: bool, errors: dict[str, str], status_code: int = 200
) -> Response:
    others = [s for s in await partner_statuses(page) if s["code"] != form.code or not editing]
    return page.render(
        "statuses/dialog.html",
        status_code,
        form=form,
        editing=editing,
        errors=errors,
        choices=choices(page, others),
        types=STATUS_TYPES,
        languages=LANGUAGES,
    )


@router.get("/new")
async def new_status(page: Marketer, type: str = "general") -> Response:
    return await _dialog(page, StatusForm(type=type if type in STATUS_TYPES else "general"), editing=False, errors={})


@router.post("")
async def create_status(page: Marketer) -> Response:
    form = StatusForm.parse(await page.request.form())
    try:
        body = {"code": form.code, "type": form.type, **form.fields()}
        body.setdefault("position", await _next_position(page, form.type))
        await page.api.call(Service.REGISTRY, "POST", "/v1/statuses", json=body)
    except BackendProblem as refused:
        return await _dialog(page, form, editing=False, errors=_errors(page, refused), status_code=refused.status)
    flash(page.request, page.gettext("Status “%(name)s” added.", name=form.name))
    return page.redirect("/settings/statuses")


@router.get("/{code}/edit")
async def edit_status(page: Marketer, code: str) -> Response:
    status = await page.api.get(Service.REGISTRY, f"/v1/statuses/{segment(code)}")
    return await _dialog(page, StatusForm.of(status), editing=True, errors={})


@router.post("/{code}")
async def update_status(page: Marketer, code: str) -> Response:
    form = StatusForm.parse(await page.request.form())
    form.code = code
    try:
        await page.api.call(
            Service.REGISTRY, "PATCH", f"/v1/statuses/{segment(code)}", json=form.fields(), etag=f'"{form.version}"'
        )
    except BackendProblem as refused:
        if refused.status == 404:
            raise
        if refused.status == 412:
            await _existing(page, code)  # another partner's status, or none: the 404 page, not "changed by..."
        return await _dialog(page, form, editing=True, errors=_errors(page, refused), status_code=refused.status)
    flash(page.request, page.gettext("Status “%(name)s” saved.", name=form.name))
    return page.redirect("/settings/statuses")


@router.post("/{code}/archive")
async def archive_status(page: Marketer, code: str) -> Response:
    form = await page.request.form()
    path = f"/v1/statuses/{segment(code)}"
    try:
        await page.api.call(Service.REGISTRY, "DELETE", path, etag=f'"{form.get("version", "")}"')
    except BackendProblem as refused:
        return await _refusal(page, code, refused)
    flash(page.request, page.gettext("Status “%(code)s” archived.", code=code))
    return page.redirect("/settings/statuses")


@router.post("/{code}/restore")
async def restore_status(page: Marketer, code: str) -> Response:
    try:
        await page.api.call(Service.REGISTRY, "POST", f"/v1/statuses/{segment(code)}/restore")
    except BackendProblem as refused:
        return await _refusal(page, code, refused)
    flash(page.request, page.gettext("Status “%(code)s” restored.", code=code))
    return page.redirect("/settings/statuses?archived=true")


@router.post("/{code}/move/{direction}")
async def move_status(page: Marketer, code: str, direction: str) -> Response:
    """One place up or down within its type: the registry puts the type's statuses in the new order (10, 20, 30...)
    in one transaction; a status added or archived meanwhile refuses the move rather than half-apply it. A status
    that is not the partner's (another partner's, or none) is a 404."""
    if direction not in ("up", "down"):
        raise NotFound()
    statuses = await partner_statuses(page)
    kind = next((s["type"] for s in statuses if s["code"] == code), None)
    if kind is None:  # not among the partner's active statuses: a 404 unless it is an archived one of theirs
        await _existing(page, code)
        return page.redirect("/settings/statuses")
    order = [s for s in statuses if s["type"] == kind]
    index = next(i for i, s in enumerate(order) if s["code"] == code)
    target = index + (-1 if direction == "up" else 1)
    if 0 <= target < len(order):
        order[index], order[target] = order[target], order[index]
        try:
            codes = [status["code"] for status in order]
            path = f"/v1/statuses/order/{segment(kind)}"
            await page.api.call(Service.REGISTRY, "PUT", path, json={"codes": codes})
        except BackendProblem as refused:
            return await _refusal(page, code, refused)
    return page.redirect("/settings/statuses")


async def _existing(page: Page, code: str) -> None:
    """Raises the registry's 404 (the error page) when the partner has no status `code`, archived or not."""
    await page.api.get(Service.REGISTRY, f"/v1/statuses/{segment(code)}")


def _errors(page: Page, refused: BackendProblem) -> dict[str, str]:
    """The registry's refusal as messages by dialog field; '' holds what concerns the whole form."""
    if refused.status == 412:
        return {"": page.gettext(CHANGED_BY_SOMEONE_ELSE)}
    errors = page.field_errors(refused)
    if any(e.get("field") == "code" and e.get("type") == "string_pattern_mismatch" for e in refused.errors()):
        errors["code"] = page.gettext(BAD_CODE)
    if refused.code in KNOWN_CONFLICTS:  # the registry names the field; the console says it in the user's words
        errors[FIELD_OF_CONFLICT[refused.code]] = page.gettext(KNOWN_CONFLICTS[refused.code])
    return errors or {"": refused.detail}


async def _refusal(page: Page, code: str, refused: BackendProblem) -> Response:
    """A refused change of the list, said on the list; a status that is not the partner's is the 404 page."""
    if refused.status == 404:
        raise refused
    if refused.code == "status_in_use":  # the list shows the campaigns that block it, with links
        page.request.session["blocking"] = {"code": code, "campaigns": refused.problem.get("campaigns") or []}
    elif refused.status == 412:
        await _existing(page, code)  # "changed by someone else" only of a status that is there to change
        flash(page.request, page.gettext(CHANGED_BY_SOMEONE_ELSE), "error")
    elif refused.code == "status_list_changed":
        flash(page.request, page.gettext(LIST_CHANGED), "error")
    else:
        flash(page.request, refused.detail, "error")
    return page.redirect("/settings/statuses")
