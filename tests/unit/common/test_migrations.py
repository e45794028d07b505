from stratus.common import db


def test_heads_from_headers_match_alembic():
    # The fast start-up path must agree with Alembic's own reading of the scripts.
    assert db._heads_from_headers() == db._heads_from_alembic()
    assert "identity" in db._heads_from_headers()


async def test_upgrade_is_a_cheap_no_op_when_current(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/identity.sqlite"
    assert await db.current_revision("identity", url) is None
    await db.upgrade("identity", url)
    assert await db.current_revision("identity", url) == db.migration_heads()["identity"]
    await db.upgrade("identity", url)
