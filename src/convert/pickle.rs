//! A minimal pickle reader for PyTorch state dicts: the opcodes `torch.save` emits (protocols 2–5), with
//! storages resolved through persistent ids and tensors through `torch._utils._rebuild_tensor_v2`. Nothing is
//! executed: unknown callables become inert values, unknown opcodes an error.

use std::collections::HashMap;

/// A tensor as the pickle describes it; its bytes live in the archive entry `data/{key}`.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorRef {
    /// Storage class name, e.g. `BFloat16Storage`.
    pub storage: String,
    /// Archive entry of the storage.
    pub key: String,
    /// Offset into the storage, in elements.
    pub offset: usize,
    /// Shape.
    pub size: Vec<usize>,
    /// Strides, in elements.
    pub stride: Vec<usize>,
}

/// A pickled value (the subset state dicts use).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    /// `module.name` of a GLOBAL.
    Global(String),
    /// A persistent id `('storage', class, key, location, numel)`.
    Storage {
        class: String,
        key: String,
    },
    Tensor(TensorRef),
    /// Any other `callable(*args)`, kept inert.
    Call(Box<Value>, Vec<Value>),
    Mark,
}

fn ints(v: &Value) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(xs) | Value::List(xs) => xs
            .iter()
            .map(|x| match x {
                Value::Int(i) if *i >= 0 => Ok(*i as usize),
                other => Err(format!("expected a non-negative int, found {other:?}")),
            })
            .collect(),
        other => Err(format!("expected a tuple of ints, found {other:?}")),
    }
}

fn reduce(func: Value, args: Vec<Value>) -> Result<Value, String> {
    Ok(match &func {
        Value::Global(g) if g == "collections.OrderedDict" => Value::Dict(Vec::new()),
        Value::Global(g) if g == "torch._utils._rebuild_tensor_v2" || g == "torch._utils._rebuild_tensor" => {
            let (Some(Value::Storage { class, key }), Some(Value::Int(offset)), Some(size), Some(stride)) =
                (args.first(), args.get(1), args.get(2), args.get(3))
            else {
                return Err(format!("unexpected _rebuild_tensor arguments {args:?}"));
            };
            Value::Tensor(TensorRef {
                storage: class.clone(),
                key: key.clone(),
                offset: *offset as usize,
                size: ints(size)?,
                stride: ints(stride)?,
            })
        }
        _ => Value::Call(Box::new(func), args),
    })
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len()).ok_or("pickle ends early")?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos..];
        let n = rest.iter().position(|&b| b == b'\n').ok_or("unterminated GLOBAL")?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }
    fn utf8(&mut self, n: usize) -> Result<String, String> {
        String::from_utf8(self.take(n)?.to_vec()).map_err(|e| e.to_string())
    }
}

/// Runs the pickle program and returns its result.
pub fn load(data: &[u8]) -> Result<Value, String> {
    let mut r = Reader { data, pos: 0 };
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();
    let pop = |stack: &mut Vec<Value>| stack.pop().ok_or_else(|| "pickle stack underflow".to_string());
    let pop_mark = |stack: &mut Vec<Value>| -> Result<Vec<Value>, String> {
        let m = stack.iter().rposition(|v| *v == Value::Mark).ok_or("MARK missing")?;
        let items = stack.split_off(m + 1);
        stack.pop();
        Ok(items)
    };
    loop {
        let op = r.u8()?;
        match op {
            0x80 => {
                r.u8()?; // PROTO
            }
            0x95 => {
                r.take(8)?; // FRAME
            }
            b'.' => return pop(&mut stack),
            b'}' => stack.push(Value::Dict(Vec::new())),
            b']' => stack.push(Value::List(Vec::new())),
            b')' => stack.push(Value::Tuple(Vec::new())),
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'K' => stack.push(Value::Int(r.u8()? as i64)),
            b'M' => stack.push(Value::Int(u16::from_le_bytes(r.take(2)?.try_into().unwrap()) as i64)),
            b'J' => stack.push(Value::Int(i32::from_le_bytes(r.take(4)?.try_into().unwrap()) as i64)),
            0x8a => {
                let n = r.u8()? as usize;
                let b = r.take(n)?;
                if n > 8 {
                    return Err("LONG1 wider than 64 bits".into());
                }
                let mut v: i64 = if b.last().is_some_and(|&x| x & 0x80 != 0) { -1 } else { 0 };
                for (i, &x) in b.iter().enumerate() {
                    v = (v & !(0xff << (8 * i))) | ((x as i64) << (8 * i));
                }
                stack.push(Value::Int(v));
            }
            b'G' => stack.push(Value::Float(f64::from_be_bytes(r.take(8)?.try_into().unwrap()))),
            b'X' => {
                let n = r.u32()? as usize;
                stack.push(Value::Str(r.utf8(n)?));
            }
            0x8c => {
                let n = r.u8()? as usize;
                stack.push(Value::Str(r.utf8(n)?));
            }
            b'B' => {
                let n = r.u32()? as usize;
                stack.push(Value::Bytes(r.take(n)?.to_vec()));
            }
            b'C' => {
                let n = r.u8()? as usize;
                stack.push(Value::Bytes(r.take(n)?.to_vec()));
            }
            b'c' => {
                let (module, name) = (r.line()?, r.line()?);
                stack.push(Value::Global(format!("{module}.{name}")));
            }
            0x93 => {
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => stack.push(Value::Global(format!("{m}.{n}"))),
                    other => return Err(format!("STACK_GLOBAL on {other:?}")),
                }
            }
            b'(' => stack.push(Value::Mark),
            b't' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Value::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let at = stack.len().checked_sub(n).ok_or("pickle stack underflow")?;
                let items = stack.split_off(at);
                stack.push(Value::Tuple(items));
            }
            b'q' => {
                let i = r.u8()? as u32;
                memo.insert(i, stack.last().ok_or("BINPUT on empty stack")?.clone());
            }
            b'r' => {
                let i = r.u32()?;
                memo.insert(i, stack.last().ok_or("LONG_BINPUT on empty stack")?.clone());
            }
            0x94 => {
                let i = memo.len() as u32;
                memo.insert(i, stack.last().ok_or("MEMOIZE on empty stack")?.clone());
            }
            b'h' | b'j' => {
                let i = if op == b'h' { r.u8()? as u32 } else { r.u32()? };
                stack.push(memo.get(&i).ok_or_else(|| format!("memo {i} missing"))?.clone());
            }
            b'Q' => match pop(&mut stack)? {
                Value::Tuple(t) if t.len() >= 3 && t[0] == Value::Str("storage".into()) => {
                    let class = match &t[1] {
                        Value::Global(g) => g.rsplit('.').next().unwrap_or(g).to_string(),
                        other => return Err(format!("storage class {other:?}")),
                    };
                    let key = match &t[2] {
                        Value::Str(k) => k.clone(),
                        other => return Err(format!("storage key {other:?}")),
                    };
                    stack.push(Value::Storage { class, key });
                }
                other => return Err(format!("unsupported persistent id {other:?}")),
            },
            b'R' => {
                let args = match pop(&mut stack)? {
                    Value::Tuple(a) => a,
                    other => return Err(format!("REDUCE arguments {other:?}")),
                };
                let func = pop(&mut stack)?;
                stack.push(reduce(func, args)?);
            }
            b'b' => {
                pop(&mut stack)?; // BUILD: object state (None for tensors and OrderedDicts)
            }
            b's' | b'u' => {
                let items = if op == b's' {
                    let v = pop(&mut stack)?;
                    let k = pop(&mut stack)?;
                    vec![k, v]
                } else {
                    pop_mark(&mut stack)?
                };
                match stack.last_mut() {
                    Some(Value::Dict(d)) => {
                        let mut it = items.into_iter();
                        while let (Some(k), Some(v)) = (it.next(), it.next()) {
                            d.push((k, v));
                        }
                    }
                    other => return Err(format!("SETITEMS on {other:?}")),
                }
            }
            b'a' | b'e' => {
                let items = if op == b'a' { vec![pop(&mut stack)?] } else { pop_mark(&mut stack)? };
                match stack.last_mut() {
                    Some(Value::List(l)) => l.extend(items),
                    other => return Err(format!("APPENDS on {other:?}")),
                }
            }
            other => return Err(format!("unsupported pickle opcode 0x{other:02x} at byte {}", r.pos - 1)),
        }
    }
}
