"""The audit log becomes append-only in the database: triggers refuse UPDATE and DELETE on audit_entry.

On an existing registry the entries already there are guarded from now on. See accounts/append_only.py.
"""

from tortoise import migrations
from tortoise.migrations import operations as ops

from accounts import append_only


async def forward(apps, schema_editor) -> None:
    await append_only.install(schema_editor.client)


async def backward(apps, schema_editor) -> None:
    await append_only.uninstall(schema_editor.client)


class Migration(migrations.Migration):
    dependencies = [('accounts', '0001_initial')]

    initial = False

    operations = [
        ops.RunPython(forward, backward),
    ]
