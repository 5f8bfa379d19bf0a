//! Fuzzes `tandem_shared::mqtt::Command::decode`, the decoder of every command a device
//! takes from the broker: arbitrary bytes under any command name must never panic; whatever
//! decodes has its arguments in range, and its encoding decodes again to the same command
//! name and id (what the hub sends, the device reads).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_shared::mqtt::{Command, CommandName};

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let names = CommandName::ALL;
    let name = names
        .get(usize::from(which) % (names.len() + 1))
        .map_or("reboot", |n| n.as_str());
    if let Ok((id, cmd)) = Command::decode(name, bytes) {
        assert_eq!(cmd.name().as_str(), name);
        assert_eq!(
            cmd.check(),
            Ok(()),
            "{cmd:?} decoded with an argument out of range"
        );
        let again = Command::decode(name, &cmd.encode(&id));
        match again {
            Ok((id2, cmd2)) => assert_eq!((id2, cmd2.name()), (id, cmd.name())),
            Err(e) => panic!("{cmd:?} re-encoded does not decode: {e}"),
        }
    }
});
