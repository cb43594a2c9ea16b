from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name='UpstreamRecord',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('target', fields.CharField(max_length=32)),
                ('data_class', fields.CharField(max_length=32)),
                ('market', fields.CharField(null=True, max_length=32)),
                ('body', fields.JSONField(encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('delivered_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('failed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('attempts', fields.IntField(default=0)),
                ('last_error', fields.CharField(default='', max_length=500)),
            ],
            options={'table': 'upstream_record', 'app': 'upstream', 'indexes': [Index(fields=['target', 'delivered_at', 'failed_at', 'id'])], 'pk_attr': 'id', 'table_description': 'A record waiting for (or sent to) one supervision platform. Rows are delivered strictly in id order per'},
            bases=['Model'],
        ),
    ]
