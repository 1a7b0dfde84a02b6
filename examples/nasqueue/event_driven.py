# Added: the imports this README example leaves out.
import asyncio

from nas_queue import NASQueue

class EventProcessor:
    def __init__(self, namespace="events"):
        self.queue = NASQueue("localhost", 4222, namespace=namespace)
    
    async def start(self):
        await self.queue.connect()
        
        # Subscribe to different event types
        await self.queue.subscribe_and_queue("user.login")
        await self.queue.subscribe_and_queue("user.logout")
        await self.queue.subscribe_and_queue("order.created")
        await self.queue.subscribe_and_queue("order.completed")
    
    async def process_events(self):
        while True:
            msg = await self.queue.pop(timeout=1.0)
            if msg:
                subject = msg['subject']
                data = msg['message'].decode()
                
                if subject == "user.login":
                    await self.handle_login(data)
                elif subject == "user.logout":
                    await self.handle_logout(data)
                elif subject == "order.created":
                    await self.handle_order_created(data)
                elif subject == "order.completed":
                    await self.handle_order_completed(data)
    
    async def handle_login(self, data):
        print(f"User logged in: {data}")
    
    async def handle_logout(self, data):
        print(f"User logged out: {data}")
    
    async def handle_order_created(self, data):
        print(f"Order created: {data}")
    
    async def handle_order_completed(self, data):
        print(f"Order completed: {data}")
    
    async def stop(self):
        await self.queue.disconnect()

# Usage
async def main():
    processor = EventProcessor()
    await processor.start()
    
    # Simulate events
    event_queue = NASQueue("localhost", 4222, namespace="events")
    await event_queue.connect()
    
    await event_queue.push("user.login", "user123")
    await event_queue.push("order.created", "order456")
    await event_queue.push("order.completed", "order456")
    await event_queue.push("user.logout", "user123")
    
    # Process events
    await processor.process_events()
    
    await event_queue.disconnect()
    await processor.stop()

asyncio.run(main())
