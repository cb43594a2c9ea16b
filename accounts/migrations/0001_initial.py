from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from accounts.models import Role
from json import dumps, loads
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0001_initial')]

    initial = True

    operations = [
        ops.CreateModel(
            name='AuditEntry',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('at', fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=True)),
                ('actor', fields.CharField(db_index=True, max_length=100)),
                ('role', fields.CharField(default='', max_length=16)),
                ('action', fields.CharField(db_index=True, max_length=100)),
                ('target', fields.CharField(default='', max_length=200)),
                ('status', fields.IntField(default=0)),
                ('ip', fields.CharField(default='', max_length=64)),
                ('before', fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('after', fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
            ],
            options={'table': 'audit_entry', 'app': 'accounts', 'pk_attr': 'id', 'table_description': 'Who did what, when, from where (SJZ table 1 items 1.5–1.9). Rows are only ever inserted.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='User',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('username', fields.CharField(unique=True, max_length=64)),
                ('display_name', fields.CharField(default='', max_length=100)),
                ('email', fields.CharField(default='', max_length=200)),
                ('password_hash', fields.CharField(max_length=200)),
                ('role', fields.CharEnumField(description='ADMIN: admin\nMAINTAINER: maintainer\nMANAGER: manager\nVENDOR: vendor', enum_type=Role, max_length=16)),
                ('markets', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('vendor', fields.ForeignKeyField('models.Vendor', source_field='vendor_id', null=True, db_constraint=True, to_field='id', related_name='users', on_delete=OnDelete.CASCADE)),
                ('language', fields.CharField(default='zh', max_length=8)),
                ('active', fields.BooleanField(default=True)),
                ('failed_logins', fields.IntField(default=0)),
                ('locked_until', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'user_account', 'app': 'accounts', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Session',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('user', fields.ForeignKeyField('accounts.User', source_field='user_id', db_constraint=True, to_field='id', related_name='sessions', on_delete=OnDelete.CASCADE)),
                ('token_hash', fields.CharField(unique=True, max_length=64)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('expires_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('ip', fields.CharField(default='', max_length=64)),
            ],
            options={'table': 'user_session', 'app': 'accounts', 'pk_attr': 'id', 'table_description': 'A signed-in browser or API client. The token itself is never stored, only its hash.'},
            bases=['Model'],
        ),
    ]
