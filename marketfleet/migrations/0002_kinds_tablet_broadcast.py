from tortoise import migrations
from tortoise.migrations import operations as ops
from fleet.kinds import DeviceKind
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0001_initial')]

    initial = False

    operations = [
        ops.AlterField(
            model_name='Device',
            name='kind',
            field=fields.CharEnumField(db_index=True, description='SCALE: scale\nESL: esl\nESL_BASE_STATION: esl_base_station\nCAMERA: camera\nFLOW_COUNTER: flow_counter\nFOOD_DETECTOR: food_detector\nENV_SENSOR: env_sensor\nFIRE_PANEL: fire_panel\nCOLD_LOCKER: cold_locker\nTHERMOMETER: thermometer\nDISPLAY: display\nINSPECTION_TABLET: inspection_tablet\nBROADCAST: broadcast', enum_type=DeviceKind, max_length=32),
        ),
        ops.AlterField(
            model_name='DeviceModel',
            name='kind',
            field=fields.CharEnumField(description='SCALE: scale\nESL: esl\nESL_BASE_STATION: esl_base_station\nCAMERA: camera\nFLOW_COUNTER: flow_counter\nFOOD_DETECTOR: food_detector\nENV_SENSOR: env_sensor\nFIRE_PANEL: fire_panel\nCOLD_LOCKER: cold_locker\nTHERMOMETER: thermometer\nDISPLAY: display\nINSPECTION_TABLET: inspection_tablet\nBROADCAST: broadcast', enum_type=DeviceKind, max_length=32),
        ),
    ]
