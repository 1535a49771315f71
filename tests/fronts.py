"""One test body for both fronts: RedisSwarmState (sync) and AsyncRedisSwarmState (asyncio).

A :class:`Front` builds states on the current test's backend and hands back a
:class:`FrontState`, a blocking facade with one vocabulary for both fronts:

* every method of the sync front (``apply_update``, ``enqueue_task``, ``counts`` ...);
* the async front's names for what the sync front offers as attributes and views:
  ``get_status()`` / ``set_status(v)``, ``get_max_concurrently_running()`` / ``set_...(v)``,
  ``get_last_sync()`` / ``set_last_sync(v)``, ``get_num_previously_complete()`` / ``set_...(v)``,
  ``get_all_tasks()``, ``task_count()``, ``get_arrays()``, ``ready_to_run_len()``,
  ``ready_to_run_list()``, ``resource_keys()``;
* ``version``, ``last_ready``, ``keys``, ``workflow_id``, ``dag_id``, ``workflow_run_id``.

On the sync front those names map to the properties and views (so the views are exercised);
on the async front every coroutine runs to completion on the front's own event loop (one loop
per test, so ``redis.asyncio`` connections stay on the loop that opened them).

Use it through the ``front`` fixture of ``conftest.py`` (parametrised "sync"/"async", combined
with ``backend``)::

    def test_x(front: Front, run_id: int, prefix: str) -> None:
        st = front.state(run_id, prefix=prefix)
        st.add_tasks([...])
        other = front.attach(run_id, prefix=prefix)   # a second replica, its own client
"""

from __future__ import annotations

import asyncio
import datetime
import inspect
from collections.abc import Callable, Coroutine
from typing import Any

import fakeredis
import redis
import redis.asyncio

from swarm_redis import AsyncRedisSwarmState, RedisSwarmState

FRONTS = ("sync", "async")


class FrontState:
    """A blocking facade over a state of either front (see the module docstring)."""

    front = ""

    @property
    def raw(self) -> Any:
        """The wrapped RedisSwarmState or AsyncRedisSwarmState."""
        raise NotImplementedError

    def __getattr__(self, name: str) -> Any:
        """Each front answers the state's API by name (typed loosely: two fronts, one facade)."""
        raise AttributeError(name)


class SyncFrontState(FrontState):
    """The sync front: methods pass through, the async names map to properties and views."""

    front = "sync"

    def __init__(self, state: RedisSwarmState) -> None:
        self._state = state

    @property
    def raw(self) -> RedisSwarmState:
        return self._state

    def __getattr__(self, name: str) -> Any:
        return getattr(self._state, name)

    def get_status(self) -> str:
        return self._state.status

    def set_status(self, value: str) -> None:
        self._state.status = value

    def get_max_concurrently_running(self) -> int:
        return self._state.max_concurrently_running

    def set_max_concurrently_running(self, value: int) -> None:
        self._state.max_concurrently_running = value

    def get_last_sync(self) -> datetime.datetime | str | None:
        return self._state.last_sync

    def set_last_sync(self, value: datetime.datetime | str | None) -> None:
        self._state.last_sync = value

    def get_num_previously_complete(self) -> int:
        return self._state.num_previously_complete

    def set_num_previously_complete(self, value: int) -> None:
        self._state.num_previously_complete = value

    def get_all_tasks(self) -> dict[int, Any]:
        return dict(self._state.tasks.items())

    def task_count(self) -> int:
        return len(self._state.tasks)

    def get_arrays(self) -> dict[int, Any]:
        return dict(self._state.arrays)

    def ready_to_run_len(self) -> int:
        return len(self._state.ready_to_run)

    def ready_to_run_list(self, *start_stop: Any) -> list[Any]:
        if start_stop:  # a range: the method itself
            return self._state.ready_to_run_list(*start_stop)
        return list(self._state.ready_to_run)

    def resource_keys(self) -> list[Any]:
        return list(self._state.task_resources_cache)


class AsyncFrontState(FrontState):
    """The async front: every coroutine method runs to completion on the front's loop."""

    front = "async"

    def __init__(self, state: AsyncRedisSwarmState, run: Callable[[Any], Any]) -> None:
        self._state = state
        self._run = run

    @property
    def raw(self) -> AsyncRedisSwarmState:
        return self._state

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._state, name)
        if not inspect.iscoroutinefunction(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._run(value(*args, **kwargs))

        return call


class Front:
    """Builds states of one front on one backend; :meth:`close` releases clients and loop."""

    def __init__(
        self,
        name: str,
        *,
        url: str | None = None,
        fake_server: fakeredis.FakeServer | None = None,
        make_client: Callable[[], Any] | None = None,
    ) -> None:
        """Pick the front and the backend: a URL, a fakeredis server, or a client factory.

        ``make_client`` (e.g. one returning Cluster or Sentinel clients) must return clients of
        the front's kind: ``redis.asyncio`` ones for the async front.
        """
        if name not in FRONTS:
            raise ValueError(f"front must be one of {FRONTS}, not {name!r}")
        if sum(x is not None for x in (url, fake_server, make_client)) != 1:
            raise ValueError("give exactly one of url, fake_server and make_client")
        self.name = name
        self.url = url
        self.fake_server = fake_server
        self.make_client = make_client
        self.loop: asyncio.AbstractEventLoop | None = (
            asyncio.new_event_loop() if name == "async" else None
        )
        self._clients: list[Any] = []

    @property
    def is_async(self) -> bool:
        return self.name == "async"

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run a coroutine to completion on this front's event loop."""
        if self.loop is None:
            raise RuntimeError("the sync front has no event loop")
        return self.loop.run_until_complete(coro)

    def client(self, protocol: int = 3, decode_responses: bool = False) -> Any:
        """A new client of this front's kind (sync or asyncio) on the backend."""
        client: Any
        if self.make_client is not None:
            client = self.make_client()
        elif self.is_async:
            if self.fake_server is not None:
                client = fakeredis.FakeAsyncRedis(
                    server=self.fake_server, protocol=protocol, decode_responses=decode_responses
                )
            else:
                client = redis.asyncio.Redis.from_url(
                    str(self.url), protocol=protocol, decode_responses=decode_responses
                )
        elif self.fake_server is not None:
            client = fakeredis.FakeRedis(
                server=self.fake_server, protocol=protocol, decode_responses=decode_responses
            )
        else:
            client = redis.Redis.from_url(
                str(self.url), protocol=protocol, decode_responses=decode_responses
            )
        self._clients.append(client)
        return client

    def wrap(self, state: Any) -> FrontState:
        """The facade for a state built by hand on this front."""
        if isinstance(state, AsyncRedisSwarmState):
            return AsyncFrontState(state, self.run)
        return SyncFrontState(state)

    def state(
        self,
        workflow_run_id: int,
        *,
        workflow_id: int = 1,
        dag_id: int = 1,
        max_concurrently_running: int = 10000,
        status: str = "B",
        redis: Any = None,
        **kwargs: Any,
    ) -> FrontState:
        """Create (or join) a run, with a new client unless ``redis`` is given."""
        client = redis if redis is not None else self.client()
        if self.is_async:
            coro = AsyncRedisSwarmState.create(
                workflow_id,
                workflow_run_id,
                dag_id,
                max_concurrently_running,
                status,
                redis=client,
                **kwargs,
            )
            return self.wrap(self.run(coro))
        return self.wrap(
            RedisSwarmState(
                workflow_id,
                workflow_run_id,
                dag_id,
                max_concurrently_running,
                status,
                redis=client,
                **kwargs,
            )
        )

    def attach(self, workflow_run_id: int, *, redis: Any = None, **kwargs: Any) -> FrontState:
        """Attach to an existing run (another replica), with a new client by default."""
        client = redis if redis is not None else self.client()
        if self.is_async:
            return self.wrap(
                self.run(AsyncRedisSwarmState.attach(client, workflow_run_id, **kwargs))
            )
        return self.wrap(RedisSwarmState.attach(client, workflow_run_id, **kwargs))

    def close(self) -> None:
        """Close every client made here, then the event loop."""
        for client in self._clients:
            if self.loop is not None:
                self.loop.run_until_complete(client.aclose())
            else:
                client.close()
        self._clients.clear()
        if self.loop is not None:
            self.loop.close()
            self.loop = None
