"""The two tests of the second seed README (NASQueue), as written there."""

import asyncio
import pytest
from nas_queue import NASQueue

@pytest.mark.asyncio
async def test_push_pop():
    queue = NASQueue(namespace="test")
    await queue.connect()
    
    # Test push
    await queue.push("test", "Hello")
    assert queue.queue_size() == 1
    
    # Test pop
    msg = await queue.pop()
    assert msg is not None
    assert msg['message'] == b"Hello"
    assert msg['subject'] == "test"
    
    # Test empty pop
    msg = await queue.pop()
    assert msg is None
    
    await queue.disconnect()

@pytest.mark.asyncio
async def test_subscription():
    queue = NASQueue(namespace="test")
    await queue.connect()
    
    # Subscribe first
    await queue.subscribe_and_queue("events")
    
    # Publish message
    await queue.push("events", "Test event")
    
    # Wait for message to arrive
    await asyncio.sleep(0.1)
    
    # Should have one message
    assert queue.queue_size() == 1
    
    msg = await queue.pop()
    assert msg['message'] == b"Test event"
    
    await queue.disconnect()
