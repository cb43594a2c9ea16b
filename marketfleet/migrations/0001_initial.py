from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from fleet.kinds import DeviceKind
from fleet.models import DeviceStatus
from json import dumps, loads
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name='DeadLetter',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('received_at', fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=True)),
                ('transport', fields.CharField(max_length=16)),
                ('device_id', fields.CharField(null=True, db_index=True, max_length=64)),
                ('topic', fields.CharField(default='', max_length=255)),
                ('reason', fields.CharField(db_index=True, max_length=64)),
                ('detail', fields.TextField(default='', unique=False)),
                ('payload', fields.BinaryField(null=True)),
            ],
            options={'table': 'dead_letter', 'app': 'models', 'pk_attr': 'id', 'table_description': 'An uplink that could not be accepted, kept with the reason so a vendor can fix the device.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='IngestCursor',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('device_id', fields.CharField(max_length=64)),
                ('channel', fields.CharField(max_length=16)),
                ('last_seq', fields.BigIntField(default=-1)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'ingest_cursor', 'app': 'models', 'unique_together': (('device_id', 'channel'),), 'pk_attr': 'id', 'table_description': 'Highest sequence number durably stored per device and channel: the dedupe and ack watermark.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Market',
            fields=[
                ('code', fields.CharField(primary_key=True, unique=True, db_index=True, max_length=32)),
                ('name', fields.CharField(max_length=200)),
                ('district', fields.CharField(default='', max_length=100)),
                ('timezone', fields.CharField(default='Asia/Shanghai', max_length=64)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'market', 'app': 'models', 'pk_attr': 'code'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Stall',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('market', fields.ForeignKeyField('models.Market', source_field='market_id', db_constraint=True, to_field='code', related_name='stalls', on_delete=OnDelete.CASCADE)),
                ('number', fields.CharField(max_length=32)),
                ('holder_name', fields.CharField(default='', max_length=100)),
                ('category', fields.CharField(default='', max_length=50)),
            ],
            options={'table': 'stall', 'app': 'models', 'unique_together': (('market', 'number'),), 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Vendor',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('code', fields.CharField(unique=True, max_length=32)),
                ('name', fields.CharField(max_length=200)),
                ('contact', fields.CharField(default='', max_length=200)),
                ('api_key_prefix', fields.CharField(unique=True, max_length=16)),
                ('api_key_hash', fields.CharField(max_length=128)),
                ('active', fields.BooleanField(default=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'vendor', 'app': 'models', 'pk_attr': 'id', 'table_description': 'A hardware vendor that onboards its devices through the registration API.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='DeviceModel',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('vendor', fields.ForeignKeyField('models.Vendor', source_field='vendor_id', db_constraint=True, to_field='id', related_name='device_models', on_delete=OnDelete.CASCADE)),
                ('kind', fields.CharEnumField(description='SCALE: scale\nESL: esl\nESL_BASE_STATION: esl_base_station\nCAMERA: camera\nFLOW_COUNTER: flow_counter\nFOOD_DETECTOR: food_detector\nENV_SENSOR: env_sensor\nFIRE_PANEL: fire_panel\nCOLD_LOCKER: cold_locker\nTHERMOMETER: thermometer\nDISPLAY: display', enum_type=DeviceKind, max_length=32)),
                ('name', fields.CharField(max_length=100)),
                ('firmware_line', fields.CharField(default='', max_length=64)),
                ('specs', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'device_model', 'app': 'models', 'unique_together': (('vendor', 'name'),), 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Device',
            fields=[
                ('id', fields.CharField(primary_key=True, unique=True, db_index=True, max_length=64)),
                ('serial', fields.CharField(max_length=64)),
                ('vendor', fields.ForeignKeyField('models.Vendor', source_field='vendor_id', db_constraint=True, to_field='id', related_name='devices', on_delete=OnDelete.RESTRICT)),
                ('kind', fields.CharEnumField(db_index=True, description='SCALE: scale\nESL: esl\nESL_BASE_STATION: esl_base_station\nCAMERA: camera\nFLOW_COUNTER: flow_counter\nFOOD_DETECTOR: food_detector\nENV_SENSOR: env_sensor\nFIRE_PANEL: fire_panel\nCOLD_LOCKER: cold_locker\nTHERMOMETER: thermometer\nDISPLAY: display', enum_type=DeviceKind, max_length=32)),
                ('model', fields.ForeignKeyField('models.DeviceModel', source_field='model_id', null=True, db_constraint=True, to_field='id', related_name='devices', on_delete=OnDelete.SET_NULL)),
                ('market', fields.ForeignKeyField('models.Market', source_field='market_id', null=True, db_constraint=True, to_field='code', related_name='devices', on_delete=OnDelete.SET_NULL)),
                ('stall', fields.ForeignKeyField('models.Stall', source_field='stall_id', null=True, db_constraint=True, to_field='id', related_name='devices', on_delete=OnDelete.SET_NULL)),
                ('name', fields.CharField(default='', max_length=200)),
                ('status', fields.CharEnumField(default=DeviceStatus.ACTIVE, db_index=True, description='ACTIVE: active\nDISABLED: disabled\nRETIRED: retired', enum_type=DeviceStatus, max_length=16)),
                ('online', fields.BooleanField(default=False, db_index=True)),
                ('last_seen', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('firmware_version', fields.CharField(default='', max_length=64)),
                ('keepalive_s', fields.IntField(default=60)),
                ('labels', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('metadata', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'device', 'app': 'models', 'unique_together': (('vendor', 'serial'),), 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Credential',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('device', fields.ForeignKeyField('models.Device', source_field='device_id', db_constraint=True, to_field='id', related_name='credentials', on_delete=OnDelete.CASCADE)),
                ('salt', fields.CharField(max_length=32)),
                ('secret_hash', fields.CharField(max_length=128)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('revoked_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'credential', 'app': 'models', 'pk_attr': 'id', 'table_description': 'A device secret, stored only as a hash, at most one active per device.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='DeviceLabel',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('device', fields.ForeignKeyField('models.Device', source_field='device_id', db_constraint=True, to_field='id', related_name='label_rows', on_delete=OnDelete.CASCADE)),
                ('key', fields.CharField(max_length=64)),
                ('value', fields.CharField(max_length=200)),
            ],
            options={'table': 'device_label', 'app': 'models', 'unique_together': (('device', 'key'),), 'indexes': [Index(fields=['key', 'value'])], 'pk_attr': 'id', 'table_description': 'One label of a device as its own row, so fleets filter and campaigns target by label on any database.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='MetrologyRecord',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('device', fields.ForeignKeyField('models.Device', source_field='device_id', db_constraint=True, to_field='id', related_name='metrology_records', on_delete=OnDelete.CASCADE)),
                ('certificate_no', fields.CharField(max_length=64)),
                ('verified_on', fields.DateField()),
                ('due_on', fields.DateField(db_index=True)),
                ('authority', fields.CharField(default='', max_length=200)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'metrology_record', 'app': 'models', 'pk_attr': 'id', 'table_description': "A scale's compulsory verification (SJZ table 4 items 7–8, 15): certificate and due date."},
            bases=['Model'],
        ),
    ]
