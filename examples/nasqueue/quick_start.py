import asyncio
from nas_queue import NASQueue

async def main():
    # Create queue client
    queue = NASQueue("localhost", 4222, namespace="myapp")
    await queue.connect()
    
    # Push messages to queue
    await queue.push("orders", "Order #1001")
    await queue.push("orders", {"id": 1002, "amount": 99.99})
    
    # Check queue size
    print(f"Queue size: {queue.queue_size()}")
    
    # Pop messages from queue
    while queue.queue_size() > 0:
        msg = await queue.pop()
        print(f"Popped: {msg['message']}")
    
    # Cleanup
    await queue.disconnect()

asyncio.run(main())
