"""GET /usages by consumer type (microversion 1.38) on PostgreSQL.

Placement's query for it (placement.objects.usage._get_by_consumer_type, 6.0.0
to 16.0.0 at least) selects columns its GROUP BY does not name: first the
resource class while it groups by consumer type only, then the consumer
type's name while it groups by the consumer's consumer_type_id. MySQL and
sqlite let that pass; PostgreSQL refuses both queries ("must appear in the
GROUP BY clause"), so every such request answers 500 there.

install() replaces it, while placement's is that one, with the same query
grouped by what it selects: the consumer count per consumer type, then the
usage per resource class and consumer type. A consumer has one consumer type
and a type one name, so grouping by the name or by the id gives the same
groups, and MySQL and sqlite return what they did (the noauth suite checks it
there, the postgres suite on PostgreSQL).
"""

import inspect

from placement import db_api
from placement.db.sqlalchemy import models
from placement.objects import usage
from sqlalchemy import distinct, func

# What identifies placement's query: its first GROUP BY.
BROKEN = "query.group_by(models.ConsumerType.name).all()"


@db_api.placement_context_manager.reader
def by_consumer_type(context, project_id, user_id=None, consumer_type=None):
    """Usages of a project (and user) per resource class and consumer type, as
    placement's _get_by_consumer_type returns them."""
    if consumer_type in ("all", "unknown"):
        return usage._get_all_by_project_user(context, project_id, user_id, consumer_type=consumer_type)
    allocations = (
        context.session.query(models.Allocation)
        .join(models.Consumer, models.Allocation.consumer_id == models.Consumer.uuid)
        .outerjoin(models.ConsumerType, models.Consumer.consumer_type_id == models.ConsumerType.id)
        .join(models.Project, models.Consumer.project_id == models.Project.id)
        .filter(models.Project.external_id == project_id)
    )
    if user_id:
        allocations = allocations.join(models.User, models.Consumer.user_id == models.User.id).filter(
            models.User.external_id == user_id
        )
    if consumer_type:
        allocations = allocations.filter(models.ConsumerType.name == consumer_type)
    # Consumers counted per type apart: counted per resource class as well, a
    # consumer of VCPU and MEMORY_MB would count twice.
    consumers = dict(
        allocations.with_entities(models.ConsumerType.name, func.count(distinct(models.Allocation.consumer_id)))
        .group_by(models.ConsumerType.name)
        .all()
    )
    total = func.coalesce(func.sum(models.Allocation.used), 0)
    used = allocations.with_entities(models.Allocation.resource_class_id, total, models.ConsumerType.name).group_by(
        models.Allocation.resource_class_id, models.ConsumerType.name
    )
    return [
        {
            "resource_class": context.rc_cache.string_from_id(resource_class),
            "usage": total,
            "consumer_count": consumers[name],
            "consumer_type": name,
        }
        for resource_class, total, name in used.all()
    ]


def install():
    """Replace placement's query while it is the one PostgreSQL refuses."""
    if BROKEN in inspect.getsource(usage._get_by_consumer_type):
        usage._get_by_consumer_type = by_consumer_type
