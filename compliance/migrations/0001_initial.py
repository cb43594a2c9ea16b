from tortoise import migrations
from tortoise.migrations import operations as ops
from compliance.schemas import ZoneKind
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0001_initial')]

    initial = True

    operations = [
        ops.CreateModel(
            name='MarketLayout',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('market', fields.OneToOneField('models.Market', source_field='market_id', db_constraint=True, to_field='code', related_name='compliance_layout', on_delete=OnDelete.CASCADE)),
                ('floor_area_m2', fields.FloatField()),
                ('stall_count', fields.IntField(null=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'compliance_market_layout', 'app': 'compliance', 'pk_attr': 'id', 'table_description': 'Floor area and stall count of one market, as declared by the market manager.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Entrance',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('layout', fields.ForeignKeyField('compliance.MarketLayout', source_field='layout_id', db_constraint=True, to_field='id', related_name='entrances', on_delete=OnDelete.CASCADE)),
                ('position', fields.IntField()),
                ('name', fields.CharField(max_length=64)),
            ],
            options={'table': 'compliance_entrance', 'app': 'compliance', 'unique_together': (('layout', 'name'),), 'pk_attr': 'id', 'table_description': 'A public entrance of the market (SZ 6.9.1 asks one flow counter at each).'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Zone',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('layout', fields.ForeignKeyField('compliance.MarketLayout', source_field='layout_id', db_constraint=True, to_field='id', related_name='zones', on_delete=OnDelete.CASCADE)),
                ('position', fields.IntField()),
                ('kind', fields.CharEnumField(description='VEGETABLES: vegetables\nFRUIT: fruit\nMEAT: meat\nPOULTRY_EGGS: poultry_eggs\nAQUATIC: aquatic\nCOOKED_FOOD: cooked_food\nDAIRY: dairy\nPICKLED: pickled\nCONDIMENTS: condiments\nGRAIN_OIL: grain_oil\nDRY_GOODS: dry_goods\nTESTING_ROOM: testing_room\nPUBLIC: public\nPARKING: parking\nOTHER: other', enum_type=ZoneKind, max_length=32)),
                ('name', fields.CharField(default='', max_length=100)),
                ('area_m2', fields.FloatField()),
            ],
            options={'table': 'compliance_zone', 'app': 'compliance', 'pk_attr': 'id', 'table_description': 'A trading or service area of the market with its area (SZ 5.1.3 layout, 6.8.2 a monitored areas).'},
            bases=['Model'],
        ),
    ]
