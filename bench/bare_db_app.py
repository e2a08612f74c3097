"""The start-up reference: bare FastAPI + SQLAlchemy asyncio, one route, one engine.

What any FastAPI app on SQLAlchemy's asyncio extension pays before it answers: the
frameworks imported, an engine (and its driver) for DATABASE_URL, one route. Served
by bench/startup.py exactly as the project is.
"""

import os

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

engine = create_async_engine(os.environ.get("DATABASE_URL", "sqlite+aiosqlite:///:memory:"))
sessions = async_sessionmaker(engine)
app = FastAPI()


@app.get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}
