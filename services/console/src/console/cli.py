"""`make user PARTNER=<id> EMAIL=<email> ROLE=admin|marketer|viewer` (no PARTNER for ROLE=ops): create a console
user, or reset the one with that email (enabling it again if it was disabled), and print a one-time password, to be
changed at the first sign-in. A partner's first admin is made here; that admin invites the partner's other users."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from console.domain import InvalidUser, Role, one_time_password
from console.services import NewCredentials, Users
from console.settings import ConsoleSettings
from servicekit.db import apply_migrations, create_pool

MIGRATIONS = Path(__file__).parent / "migrations"


async def create_user(
    settings: ConsoleSettings,
    email: str,
    role: Role,
    partner_id: str | None,
    display_name: str | None = None,
    password: str | None = None,
    language: str = "en",
) -> NewCredentials:
    await asyncio.to_thread(apply_migrations, settings.database_url, MIGRATIONS, plumbing=False)
    pool = await create_pool(settings.database_url, 1, 2)
    try:
        return await Users(pool).create(email, role, partner_id, display_name, password=password, language=language)
    finally:
        await pool.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="make user", description="Create a console user with a one-time password")
    parser.add_argument("--partner", default="", help="the partner of an admin, marketer or viewer; none for ops")
    parser.add_argument("--email", required=True)
    parser.add_argument("--role", required=True, choices=[r.value for r in Role])
    parser.add_argument("--name", default=None, help="display name (default: the email's local part)")
    parser.add_argument("--keep", action="store_true", help="the password need not be changed (make run's demo users)")
    args = parser.parse_args(argv)
    password = one_time_password() if args.keep else None
    try:
        created = asyncio.run(
            create_user(ConsoleSettings(), args.email, Role(args.role), args.partner or None, args.name, password)
        )
    except InvalidUser as refused:
        parser.error(f"{refused.field}: {refused}")
    user = created.user
    where = f"partner {user.partner_id}" if user.partner_id else "all partners (ops pages only)"
    sys.stdout.write(
        f"console user {user.email} ({user.role}, {where})\n"
        f"{'password' if args.keep else 'one-time password'}: {created.password}\n"
        f"sign in at http://127.0.0.1:{ConsoleSettings().http_port}/login"
        f"{'' if args.keep else '; the password must be changed there'}.\n"
    )


if __name__ == "__main__":
    main()
