from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from vision.models import EventState
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name='FlowMinute',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('camera', fields.CharField(max_length=100)),
                ('line', fields.CharField(max_length=64)),
                ('minute', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('count_in', fields.IntField(default=0)),
                ('count_out', fields.IntField(default=0)),
            ],
            options={'table': 'vision_flow_minute', 'app': 'vision', 'unique_together': (('camera', 'line', 'minute'),), 'indexes': [Index(fields=['minute'])], 'pk_attr': 'id', 'table_description': 'People crossing one entrance line during one minute, both directions (SZ 6.9).'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='VisionCamera',
            fields=[
                ('device_id', fields.CharField(primary_key=True, unique=True, db_index=True, max_length=100)),
                ('market', fields.CharField(null=True, max_length=32)),
                ('name', fields.CharField(default='', max_length=200)),
                ('manufacturer', fields.CharField(default='', max_length=100)),
                ('model', fields.CharField(default='', max_length=100)),
                ('onvif_host', fields.CharField(default='', max_length=255)),
                ('onvif_port', fields.IntField(default=80)),
                ('profile', fields.CharField(default='', max_length=64)),
                ('stream_uri', fields.CharField(max_length=1000)),
                ('snapshot_uri', fields.CharField(null=True, max_length=1000)),
                ('analytics', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('enabled', fields.BooleanField(default=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'vision_camera', 'app': 'vision', 'pk_attr': 'device_id', 'table_description': 'A camera the vision worker watches: where its stream is and what to analyse.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='VisionEvent',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('camera', fields.CharField(db_index=True, max_length=100)),
                ('market', fields.CharField(null=True, max_length=32)),
                ('category', fields.CharField(max_length=40)),
                ('zone', fields.CharField(null=True, max_length=64)),
                ('track_id', fields.IntField(null=True)),
                ('count', fields.IntField(null=True)),
                ('confidence', fields.FloatField()),
                ('detail', fields.CharField(default='', max_length=500)),
                ('evidence_path', fields.CharField(null=True, max_length=1000)),
                ('state', fields.CharEnumField(default=EventState.OPEN, description='OPEN: open\nHANDLED: handled', enum_type=EventState, max_length=7)),
                ('handled_by', fields.CharField(null=True, max_length=100)),
                ('handled_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('note', fields.CharField(default='', max_length=1000)),
                ('created_at', fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'vision_event', 'app': 'vision', 'pk_attr': 'id', 'table_description': 'A crowd peak or violation seen by a camera, with its evidence image and how it was handled.'},
            bases=['Model'],
        ),
    ]
